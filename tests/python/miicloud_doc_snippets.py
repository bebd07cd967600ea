#!/usr/bin/env python3
"""The miiCloud reference's Python `requests` snippets, run against facegate.

Only the host changes (`https://sandbox.miicloud.io` becomes argv[1]). Three snippets in the
document are not valid Python as printed (a dict literal on the line after `=`, an unclosed
string, an unquoted id); those get the smallest fix that makes them run.

usage: miicloud_doc_snippets.py BASE_URL   (run in a folder holding input/persons/will_smith/
       will_smith_00{1,3}.jpg and input/test_images/test_001.jpg)
"""
import sys

import requests

from checks import check

BASE = sys.argv[1].rstrip("/")

# The snippets below are the document's own and carry no timeout; every request gets one here
# instead, so that a server that stops answering fails the harness rather than holding the run.
_send = requests.sessions.Session.request


def _with_timeout(self, method, url, **kwargs):
    kwargs.setdefault("timeout", 120)
    return _send(self, method, url, **kwargs)


requests.sessions.Session.request = _with_timeout


def check_keys(name, body, expected):
    got = sorted(body.keys())
    if got != sorted(expected):
        raise SystemExit(f"{name}: keys {got} != {sorted(expected)}: {body}")


# ---- Enroll Person ----
import os

auth_token = 'Token 0e653da4969a757d21de0ffa6387d5fbd6401131'
image_path = 'input/persons/will_smith/will_smith_001.jpg'
api_endpoint = BASE + '/miicloud/person'
enrollment_payload = {
    'customer_person_id': '1234567',
    'first_name': 'John',
    'last_name': 'Doe',
    'email': 'test@domain.com',
    'phone': '0123456789'
}
filename = os.path.basename(image_path)
file = {'image_path': (filename, open(image_path, 'rb'), "multipart/form-data")}
enroll_response = requests.post(api_endpoint, headers={'Authorization': auth_token}, data = enrollment_payload, files = file)

check(enroll_response.status_code == 200, enroll_response.text)
body = enroll_response.json()
check_keys("enroll", body, ["status", "miicloud_person_id", "customer_person_id", "first_name", "last_name",
                            "email", "phone", "bounding_box", "image"])
check(body["status"] == "success" and body["customer_person_id"] == "1234567", body)
check_keys("enroll.bounding_box", body["bounding_box"], ["left_x", "left_y", "right_x", "right_y"])
check(body["image"].startswith("enroll/will_smith_001_") and body["image"].endswith(".jpg"), body)
person_id = body["miicloud_person_id"]

# ---- Update Person ----
auth_token = 'Token 0e653da4969a757d21de0ffa6387d5fbd6401131'
image_path = 'input/persons/will_smith/will_smith_003.jpg'
api_endpoint = BASE + '/miicloud/person'
payload = {
    'customer_person_id': '1234567',
    'first_name': 'John',
    'last_name': 'Doe',
    'email': 'john_doe_2@domain.com',
    'phone': '+12222222222'
}
filename = os.path.basename(image_path)
file = {'image_path': (filename, open(image_path, 'rb'), "multipart/form-data")}
enroll_response = requests.put(api_endpoint, headers={'Authorization': auth_token}, data = payload, files = file)

check(enroll_response.status_code == 200, enroll_response.text)
body = enroll_response.json()
check_keys("update", body, ["status", "miicloud_person_id", "customer_person_id", "first_name", "last_name",
                            "email", "phone", "images", "bounding_box"])
check(body["miicloud_person_id"] == person_id and body["email"] == "john_doe_2@domain.com", body)
check(len(body["images"]) == 2, body)
for entry in body["images"]:
    check_keys("update.images[]", entry, ["image", "created"])

# ---- Get Person ----
auth_token = 'Token 0e653da4969a757d21de0ffa6387d5fbd6401131'
api_endpoint = BASE + '/miicloud/person'

customer_person_id = '1234567'

response = requests.get(api_endpoint + '/' + customer_person_id, headers={'Authorization': auth_token})

check(response.status_code == 200, response.text)
body = response.json()
check_keys("get", body, ["customer_person_id", "miicloud_person_id", "images", "first_name", "last_name",
                         "phone", "email"])
check(body["phone"] == "+12222222222", body)

# ---- Match Faces (1:N) ----
auth_token = 'Token 0e653da4969a757d21de0ffa6387d5fbd6401131'
image_path = 'input/test_images/test_001.jpg'
api_endpoint = BASE + '/miicloud/match_faces'

payload = {'image_path': image_path}
filename = os.path.basename(image_path)
file = {'image_path': (filename, open(image_path, 'rb'), "multipart/form-data")}

response = requests.post(api_endpoint, headers={'Authorization': auth_token}, data = payload, files = file)

check(response.status_code == 200, response.text)
faces = response.json()["faces"]
check(len(faces) == 1, faces)
check_keys("match.faces[]", faces[0], ["match_status", "bounding_box", "match_confidence",
                                        "miicloud_person_id", "person_id", "customer_person_id"])
check(faces[0]["match_status"] == "known" and faces[0]["customer_person_id"] == "1234567", faces)
check(0 < faces[0]["match_confidence"] <= 1, faces)

# ---- Delete Person ----
auth_token = 'Token 0e653da4969a757d21de0ffa6387d5fbd6401131'
api_endpoint = BASE + '/miicloud/person'

customer_person_id = '1234567'

response = requests.delete(api_endpoint + '/' + customer_person_id, headers={'Authorization': auth_token})

check(response.status_code == 200, response.text)
body = response.json()
check_keys("delete", body, ["status", "customer_person_id", "miicloud_person_id"])
check(body == {"status": "success", "customer_person_id": "1234567", "miicloud_person_id": person_id}, body)

response = requests.get(api_endpoint + '/' + customer_person_id, headers={'Authorization': auth_token})
check(response.status_code == 404 and response.json()["status"] == "fail", response.text)

print("miiCloud document snippets: all passed")
