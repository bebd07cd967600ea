"""The web console in a real browser: headless Chromium from Debian's packages, driven through
Debian's chromedriver by Selenium (both paths given, so Selenium Manager never downloads one).

Against a running server: signs in with a miiCloud token, uploads a group photo and checks that
the boxes drawn match the API's face count, enrolls a face from one photo of a person, searches
with another photo of that person and sees the match, then deletes the person. With --unknown
photos (of people nobody enrolled, for a tenant that keeps unknown faces: `facegate tenant set
--unknown-faces on`), it first searches with each (miiCloud 1:N `match_faces`), so that the
server keeps their faces as sightings, and then on the Unknown people page checks the groups and
their crops, merges two groups, promotes one to a person and deletes one. With --screenshots DIR
it also saves the main screens at laptop size and one at phone size (and enrolls a few more
people first, so that the gallery looks like one).

Prints one JSON line: {"faces_api": n, "faces_drawn": n, "match": {...}, "unknown": {...}, "screenshots": [...]}.

    PYTHONPATH=.facegate/python python3 -S tests/python/console_browser.py --url http://127.0.0.1:8080 \
        --token TOKEN --group players.jpg --enroll a1.png --probe a2.png [--unknown b1.png ...] \
        [--extra DIR ...] [--screenshots docs/console]
"""

import argparse
import json
import os
import sys
import time

# Selenium Manager must never go to the network: the driver and browser are given below.
os.environ["SE_OFFLINE"] = "true"
os.environ.setdefault("SE_AVOID_STATS", "true")

import requests  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

LAPTOP = (1440, 960)
PHONE = (390, 844)
# Long enough for a detect or search of a 20-face photo on a busy 2-core machine.
WAIT = 45


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--group", required=True, help="a photo of many faces (players.jpg)")
    ap.add_argument("--enroll", required=True, help="a photo of one person")
    ap.add_argument("--probe", required=True, help="another photo of the same person")
    ap.add_argument("--unknown", action="append", default=[],
                    help="a photo of someone nobody enrolled, searched 1:N before the browser starts; give at least "
                         "three people's, so that the page can merge, promote and delete")
    ap.add_argument("--extra", action="append", default=[], help="photos of other people, for the screenshots")
    ap.add_argument("--screenshots", help="a folder to save screenshots in")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()

    auth = {"Authorization": "Token " + args.token}
    with open(args.group, "rb") as f:
        detected = requests.post(args.url + "/console/api/detect", headers=auth, files={"image_path": f}, timeout=60)
    detected.raise_for_status()
    faces_api = len(detected.json()["faces"])

    cpid = "console-e2e-%d" % os.getpid()
    promoted = "console-unknown-%d" % os.getpid()
    # Before anyone is enrolled: each face of these searches matches nobody, so the server keeps it.
    kept = search_unknown(args, auth)
    extras = []
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
        extras = enroll_extras(args, auth)

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US",
                 "--window-size=%d,%d" % LAPTOP):
        options.add_argument(flag)
    # The page's console messages, to find script errors and Content-Security-Policy refusals.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
    # A page or script that never finishes fails the run instead of holding it.
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    shots = []
    result = {"faces_api": faces_api}
    try:
        wait = WebDriverWait(driver, WAIT)

        def shot(name):
            if args.screenshots:
                time.sleep(0.4)  # thumbnails are drawn as their images arrive
                path = os.path.join(args.screenshots, name + ".png")
                driver.save_screenshot(path)
                shots.append(path)

        def visible(css):
            return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))

        def notice(text):
            wait.until(lambda d: text in d.find_element(By.ID, "toast-text").text
                       and d.find_element(By.ID, "toast").is_displayed())
            toast = driver.find_element(By.ID, "toast")
            assert "ok" in toast.get_attribute("class"), "an error instead: " + toast.text
            click(driver.find_element(By.ID, "toast-close"))

        def click(element):
            # Centred first: the sticky top bar must not be the one to take the click.
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            element.click()

        def upload(path):
            driver.find_element(By.ID, "file-input").send_keys(os.path.abspath(path))
            wait.until(lambda d: "face" in d.find_element(By.ID, "face-count").text
                       and "finding" not in d.find_element(By.ID, "face-count").text)

        # Sign in: a wrong token shows the API's message, the right one opens the console.
        driver.get(args.url + "/console")
        visible("#token")
        shot("login")
        driver.find_element(By.ID, "token").send_keys("not-the-token")
        click(driver.find_element(By.ID, "sign-in"))
        error = visible("#login-error")
        assert "invalid token" in error.text, error.text
        driver.find_element(By.ID, "token").clear()
        driver.find_element(By.ID, "token").send_keys(args.token)
        click(driver.find_element(By.ID, "sign-in"))
        visible("#app")

        # Detect: a box per face the API finds, the largest marked.
        upload(args.group)
        drawn = driver.find_elements(By.CSS_SELECTOR, "#photo-overlay .face-box")
        result["faces_drawn"] = len(drawn)
        assert len(drawn) == faces_api, (len(drawn), faces_api)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#photo-overlay g.largest")) == 1
        assert len(driver.find_elements(By.CSS_SELECTOR, "#photo-overlay .eye")) == 2 * faces_api
        click(driver.find_elements(By.CSS_SELECTOR, "#face-list .face-item")[2])
        shot("detect")

        # Enroll the face of one photo as a new person.
        upload(args.enroll)
        driver.find_element(By.ID, "enroll-cpid").send_keys(cpid)
        driver.find_element(By.ID, "enroll-first").send_keys("Console")
        driver.find_element(By.ID, "enroll-last").send_keys("Tester")
        click(driver.find_element(By.ID, "enroll-submit"))
        notice("Enrolled face 1")

        # Search with another photo of that person: the best candidate is them, and known.
        upload(args.probe)
        click(driver.find_element(By.ID, "search-all"))
        visible(".result-face .candidate")
        first = driver.find_element(By.CSS_SELECTOR, ".result-face .candidate")
        found = first.find_element(By.CSS_SELECTOR, ".cpid").text
        verdict = driver.find_element(By.CSS_SELECTOR, ".result-face .verdict").text
        result["match"] = {"customer_person_id": found, "verdict": verdict}
        assert found == cpid, (found, cpid)
        assert verdict == "Known", verdict
        shot("search")

        # Gallery: find the person by a prefix of the id, open them, delete them.
        click(driver.find_element(By.ID, "tab-gallery"))
        if args.screenshots:
            visible(".person-card")
            shot("gallery")
        prefix = driver.find_element(By.ID, "person-prefix")
        prefix.clear()
        prefix.send_keys(cpid[:-1])
        click(driver.find_element(By.ID, "person-search-go"))
        card = visible('.person-card[data-cpid="%s"]' % cpid)
        click(card)
        visible("#person-view .stored-face")
        assert cpid in driver.find_element(By.ID, "person-fields").text
        shot("person")
        click(driver.find_element(By.ID, "delete-person"))
        click(visible("#confirm-delete"))
        notice("Deleted")
        gone = requests.get(args.url + "/miicloud/person/" + cpid, headers=auth, timeout=30)
        assert gone.status_code == 404, gone.status_code
        result["deleted"] = True

        if args.unknown:
            result["unknown"] = unknown_people(driver, wait, click, notice, shot, args, auth, kept, promoted)

        # Nothing the page did raised a script error or was refused by its Content-Security-Policy
        # (a wrong token's 401, above, is the one failed load expected).
        problems = [e["message"] for e in driver.get_log("browser")
                    if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
        assert not problems, problems

        # The same console on a phone.
        if args.screenshots:
            click(driver.find_element(By.ID, "tab-detect"))
            driver.set_window_size(*PHONE)
            upload(args.group)
            driver.execute_script("window.scrollTo(0, 0)")
            shot("phone-detect")
    finally:
        driver.quit()
        # Whatever failed, the test leaves no person behind (a 404 for one already deleted).
        for extra in extras + [cpid, promoted]:
            requests.delete(args.url + "/miicloud/person/" + extra, headers=auth, timeout=30)
    result["screenshots"] = shots
    print(json.dumps(result))


def search_unknown(args, auth):
    """Searches 1:N with each --unknown photo; answers how many faces matched nobody (the server
    keeps each as a sighting)."""
    kept = 0
    for i, path in enumerate(args.unknown):
        with open(path, "rb") as f:
            r = requests.post(args.url + "/miicloud/match_faces", headers=dict(auth, **{"x-request-id": "unknown-%d" % i}),
                              files={"image_path": f}, timeout=60)
        r.raise_for_status()
        kept += sum(1 for face in r.json()["faces"] if face["match_status"] == "unknown")
    return kept


def unknown_people(driver, wait, click, notice, shot, args, auth, kept, promoted):
    """The Unknown people page: the API's groups with their crops and counts, then a merge, a
    promotion and a deletion, each seen on the page and through the API."""
    api = args.url + "/facegate/v1/unknown-people"

    def listed():
        r = requests.get(api + "?limit=100", headers=auth, timeout=30)
        r.raise_for_status()
        return {p["id"]: p["sightings"] for p in r.json()["unknown_people"]}

    def shown():
        """The page's groups: id -> (count text, loaded crops, crops still loading or broken)."""
        return driver.execute_script("""
            const groups = {};
            for (const card of document.querySelectorAll('#unknown-list .unknown-group')) {
              const imgs = Array.from(card.querySelectorAll('.sighting-crop img'));
              const loaded = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
              groups[card.dataset.id] = [card.querySelector('.sighting-count').textContent, loaded,
                card.querySelectorAll('.sighting-crop').length - loaded];
            }
            return groups;""")

    def count_text(n):
        return "1 sighting" if n == 1 else "%d sightings" % n

    def settled(expected):
        """Waits until the page shows exactly `expected` (id -> sightings), every crop loaded."""
        def ok(_):
            now = shown()
            return set(now) == set(expected) and all(
                now[i][0] == count_text(n) and now[i][1] == min(8, n) and now[i][2] == 0 for i, n in expected.items())
        try:
            wait.until(ok)
        except Exception:
            raise AssertionError("the page shows %s, the API %s" % (shown(), expected))

    def card(pid):
        return driver.find_element(By.CSS_SELECTOR, '#unknown-list .unknown-group[data-id="%s"]' % pid)

    groups = listed()
    assert sum(groups.values()) == kept, (groups, kept)
    assert len(groups) >= 3, "merge, promote and delete need three groups: %s" % groups
    click(driver.find_element(By.ID, "tab-unknown"))
    settled(groups)
    result = {"groups": len(groups), "sightings": kept, "largest": max(groups.values())}
    shot("unknown")

    # Merge: tick two groups; the second moves into the first.
    into, source = sorted(groups)[:2]
    click(card(into).find_element(By.CSS_SELECTOR, ".unknown-pick"))
    click(card(source).find_element(By.CSS_SELECTOR, ".unknown-pick"))
    click(driver.find_element(By.ID, "unknown-merge"))
    notice("Merged two unknown people")
    merged = groups[into] + groups.pop(source)
    groups[into] = merged
    assert listed() == groups, (listed(), groups)
    settled(groups)
    result["merged"] = merged

    # Promote the merged group to a person: it leaves the page, and miiCloud knows the person.
    click(card(into).find_element(By.CSS_SELECTOR, ".promote"))
    card(into).find_element(By.CSS_SELECTOR, ".promote-cpid").send_keys(promoted)
    click(card(into).find_element(By.CSS_SELECTOR, ".promote-go"))
    notice("Enrolled the unknown person as " + promoted)
    del groups[into]
    settled(groups)
    person = requests.get(args.url + "/miicloud/person/" + promoted, headers=auth, timeout=30)
    assert person.status_code == 200, (person.status_code, person.text)
    result["promoted"] = promoted

    # Delete another after confirming: it leaves the page and the API.
    victim = sorted(groups)[0]
    click(card(victim).find_element(By.CSS_SELECTOR, ".delete"))
    click(wait.until(EC.visibility_of(card(victim).find_element(By.CSS_SELECTOR, ".confirm-delete"))))
    notice("Deleted the unknown person")
    del groups[victim]
    settled(groups)
    assert listed() == groups, (listed(), groups)
    result["deleted"] = victim
    if not groups:
        wait.until(EC.visibility_of_element_located((By.ID, "unknown-empty")))
    result["left"] = len(groups)
    return result


def enroll_extras(args, auth):
    """A few more people, so that the gallery screenshot shows a gallery."""
    enrolled = []
    names = ["Amy Farrah", "Bernadette Rostenkowski", "Howard Wolowitz", "Leonard Hofstadter", "Penny Teller",
             "Raj Koothrappali", "Sheldon Cooper", "Stuart Bloom"]
    for i, path in enumerate(args.extra):
        first, last = names[i % len(names)].split(" ", 1)
        cpid = "emp-%03d" % (i + 1)
        with open(path, "rb") as f:
            r = requests.post(args.url + "/miicloud/person", headers=auth, timeout=60,
                              data={"customer_person_id": cpid, "first_name": first, "last_name": last},
                              files={"image_path": f})
        if r.status_code == 200:
            enrolled.append(cpid)
        else:
            print("could not enroll %s: %s" % (path, r.text), file=sys.stderr)
    return enrolled


if __name__ == "__main__":
    main()
