// facegate console: plain JavaScript, no build step, nothing fetched but this server's API.
// The token lives in this tab's sessionStorage and in memory; it is never logged or put in a URL.
"use strict";

(() => {
  const TOKEN_KEY = "facegate.console.token";
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    token: null,
    session: null,
    photo: null, // {file, name, url, width, height, faces}
    selected: -1,
    mode: "new",
    pages: [""], // the `after` of each page seen, for Previous
    pageIndex: 0,
    prefix: "",
    person: null,
    jobsTimer: null,
    view: "detect",
    unknownAfter: null, // the `after` of the next page of unknown people
    unknownPicked: [], // ids ticked for a merge, in the order ticked
    unknownLoads: 0, // counts the loads of that page, so that only the latest one shows
  };
  const faceImages = new Map(); // face id -> Promise<HTMLImageElement>, from blob URLs
  const cropUrls = []; // blob URLs of the sighting crops shown on the unknown people page

  // ---- messages -------------------------------------------------------------------------------
  function showError(message) {
    const toast = $("toast");
    toast.classList.remove("ok");
    $("toast-text").textContent = message;
    toast.hidden = false;
  }
  function showNotice(message) {
    const toast = $("toast");
    toast.classList.add("ok");
    $("toast-text").textContent = message;
    toast.hidden = false;
    clearTimeout(showNotice.timer);
    showNotice.timer = setTimeout(() => { if (toast.classList.contains("ok")) toast.hidden = true; }, 6000);
  }
  function clearMessage() { $("toast").hidden = true; }

  // ---- the API --------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // Calls the API with the token; answers the parsed JSON, or throws with the API's message.
  // `options.json` is sent as a JSON body.
  async function api(path, options = {}) {
    const headers = { Authorization: "Token " + state.token };
    let sent = options.body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      sent = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(path, { method: options.method || "GET", headers, body: sent, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "The server cannot be reached (" + e.message + ").");
    }
    if (response.status === 401 && !options.signingIn) {
      signOut("Your token was refused; sign in again.");
      throw new ApiError(401, "Your token was refused; sign in again.");
    }
    if (options.raw && response.ok) return response;
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!response.ok) {
      const message = body && (body.message || body.error) ? (body.message || body.error) : text || response.statusText;
      throw new ApiError(response.status, message + " (HTTP " + response.status + ")");
    }
    return body;
  }

  // Runs `work`, showing any failure; `button` is disabled meanwhile.
  async function guarded(work, button) {
    if (button) button.disabled = true;
    try {
      return await work();
    } catch (e) {
      showError(e.message || String(e));
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  }

  function formOf(fields, file, fileName) {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      if (value !== undefined && value !== null) form.append(name, value);
    }
    if (file) form.append("image_path", file, fileName || file.name || "photo.jpg");
    return form;
  }

  // A stored face image, fetched with the token and shown from a blob URL.
  function faceImage(faceId) {
    if (!faceImages.has(faceId)) {
      const loading = api("/console/api/faces/" + encodeURIComponent(faceId) + "/image", { raw: true })
        .then((response) => response.blob())
        .then((blob) => loadImage(URL.createObjectURL(blob)));
      loading.catch(() => faceImages.delete(faceId));
      faceImages.set(faceId, loading);
    }
    return faceImages.get(faceId);
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the image could not be shown"));
      img.src = url;
    });
  }

  // Draws the face `box` of `img` into `canvas`, centred, with some of the head around it.
  function drawFace(canvas, img, box, margin = 0.35) {
    const ratio = window.devicePixelRatio || 1;
    const css = canvas.getBoundingClientRect();
    const side = Math.max(64, Math.round((css.width || canvas.width) * ratio));
    canvas.width = side;
    canvas.height = side;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#0e1520";
    ctx.fillRect(0, 0, side, side);
    const w = box.right - box.left;
    const h = box.bottom - box.top;
    const span = Math.max(w, h) * (1 + 2 * margin);
    const cx = box.left + w / 2;
    const cy = box.top + h / 2;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, cx - span / 2, cy - span / 2, span, span, 0, 0, side, side);
  }

  function personName(p) {
    const name = [p.first_name, p.last_name].filter(Boolean).join(" ");
    return name || p.customer_person_id || "(no name)";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- sign in and out ------------------------------------------------------------------------
  async function signIn(token) {
    state.token = token;
    const session = await api("/console/api/session", { signingIn: true });
    state.session = session;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("tenant-name").textContent = session.tenant;
    $("login").hidden = true;
    $("app").hidden = false;
    showView("detect");
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.session = null;
    stopJobsTimer();
    for (const loading of faceImages.values()) loading.then((img) => URL.revokeObjectURL(img.src), () => {});
    faceImages.clear();
    forgetCrops();
    $("app").hidden = true;
    $("login").hidden = false;
    $("token").value = "";
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("token").focus();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("login-error").hidden = true;
    if (!token) return;
    const button = $("sign-in");
    button.disabled = true;
    try {
      await signIn(token);
    } catch (e) {
      state.token = null;
      $("login-error").textContent = e.message;
      $("login-error").hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("toast-close").addEventListener("click", clearMessage);

  // ---- views ----------------------------------------------------------------------------------
  function showView(view) {
    state.view = view;
    for (const name of ["detect", "gallery", "unknown", "jobs"]) {
      $("view-" + name).hidden = name !== view;
      $("tab-" + name).classList.toggle("active", name === view);
    }
    stopJobsTimer();
    if (view === "gallery") {
      showGalleryList();
      loadPersons();
      loadTags();
    } else if (view === "unknown") {
      loadUnknown(true);
    } else if (view === "jobs") {
      loadJobs();
    }
  }
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => { clearMessage(); showView(tab.dataset.view); });
  }

  // ---- detect ---------------------------------------------------------------------------------
  const drop = $("drop");
  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files && event.target.files[0];
    if (file) openPhoto(file);
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files && event.dataTransfer.files[0];
    if (file) openPhoto(file);
  });
  $("change-photo").addEventListener("click", () => $("file-input").click());

  async function openPhoto(file) {
    clearMessage();
    if (state.session && file.size > state.session.limits.image_bytes) {
      showError("The photo is " + Math.round(file.size / 1048576) + " MiB; the server takes at most " +
        Math.round(state.session.limits.image_bytes / 1048576) + " MiB.");
      return;
    }
    if (state.photo) URL.revokeObjectURL(state.photo.url);
    const url = URL.createObjectURL(file);
    let img;
    try {
      img = await loadImage(url);
    } catch (_) {
      URL.revokeObjectURL(url);
      showError("This file is not an image the browser can show.");
      return;
    }
    state.photo = { file, name: file.name || "photo", url, width: img.naturalWidth, height: img.naturalHeight, faces: [] };
    state.selected = -1;
    const photo = $("photo");
    photo.src = url;
    $("photo-name").textContent = state.photo.name;
    $("face-count").textContent = "finding faces…";
    $("drop").hidden = true;
    $("stage").hidden = false;
    window.scrollTo(0, 0);
    $("results").hidden = true;
    $("face-detail").hidden = true;
    $("side-faces").hidden = true;
    $("side-empty").hidden = false;
    fitPhoto();
    drawOverlay();
    const found = await guarded(() => api("/console/api/detect", { method: "POST", body: formOf({}, file) }));
    if (!found || !state.photo || state.photo.url !== url) {
      if (!found) $("face-count").textContent = "no result";
      return;
    }
    state.photo.faces = found.faces;
    const n = found.faces.length;
    $("face-count").textContent = n === 1 ? "1 face" : n + " faces";
    drawOverlay();
    listFaces();
    if (n === 0) {
      showError("No face was found in this photo.");
    } else {
      selectFace(0);
    }
  }

  // Shows the photo as large as the column and 70 % of the window allow, small photos scaled up
  // (at most 4×) so that their faces can be judged; the overlay follows the photo's box.
  function fitPhoto() {
    const photo = state.photo;
    if (!photo || $("stage").hidden) return;
    const maxWidth = $("photo-frame").clientWidth;
    const maxHeight = Math.max(280, window.innerHeight * 0.7);
    const scale = Math.min(maxWidth / photo.width, maxHeight / photo.height, 4);
    const wrap = $("photo-wrap");
    wrap.style.width = Math.floor(photo.width * scale) + "px";
    wrap.style.height = Math.floor(photo.height * scale) + "px";
  }
  window.addEventListener("resize", () => { fitPhoto(); drawOverlay(); });

  // Registrable from 0.5, the service's default minimum quality for a registration.
  function qualityClass(q) { return q >= 0.5 ? "q-good" : q >= 0.3 ? "q-fair" : "q-poor"; }
  function pct(q) { return Math.round(q * 100); }
  function deg(v) { return (v >= 0 ? "+" : "−") + Math.abs(Math.round(v)) + "°"; }

  function drawOverlay() {
    const svg = $("photo-overlay");
    const photo = state.photo;
    svg.replaceChildren();
    if (!photo) return;
    svg.setAttribute("viewBox", "0 0 " + photo.width + " " + photo.height);
    // Labels about 12 px high as shown, whatever the photo's size.
    const shown = $("photo-wrap").clientWidth || photo.width;
    const fontSize = Math.max(4, 12 * photo.width / shown);
    // Smaller faces drawn last, so that their boxes stay clickable inside larger ones.
    photo.faces.forEach((face, i) => {
      const b = face.face_box;
      const g = document.createElementNS(SVG, "g");
      g.setAttribute("class", "face" + (face.largest ? " largest" : "") + (i === state.selected ? " selected" : ""));
      g.dataset.index = String(i);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "face-box");
      rect.setAttribute("x", b.left);
      rect.setAttribute("y", b.top);
      rect.setAttribute("width", Math.max(1, b.right - b.left));
      rect.setAttribute("height", Math.max(1, b.bottom - b.top));
      g.appendChild(rect);
      const size = b.right - b.left;
      face.keypoints.forEach((p, k) => {
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("class", k < 2 ? "eye" : "keypoint");
        dot.setAttribute("cx", p[0]);
        dot.setAttribute("cy", p[1]);
        dot.setAttribute("r", Math.max(1.5, size * (k < 2 ? 0.045 : 0.025)));
        g.appendChild(dot);
      });
      // Where the head points: from the nose, pan to the side and tilt up or down.
      const nose = face.keypoints[2];
      const reach = size * 0.6;
      const dx = Math.sin(face.pose.pan * Math.PI / 180) * reach;
      const dy = -Math.sin(face.pose.tilt * Math.PI / 180) * reach;
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "pose");
      line.setAttribute("x1", nose[0]);
      line.setAttribute("y1", nose[1]);
      line.setAttribute("x2", nose[0] + dx);
      line.setAttribute("y2", nose[1] + dy);
      g.appendChild(line);
      const labelText = (i + 1) + " · Q" + pct(face.quality);
      const textWidth = labelText.length * fontSize * 0.6 + fontSize * 0.6;
      const bg = document.createElementNS(SVG, "rect");
      bg.setAttribute("class", "label-bg");
      const labelX = Math.max(0, Math.min(b.left, photo.width - textWidth));
      bg.setAttribute("x", labelX);
      bg.setAttribute("y", Math.max(0, b.top - fontSize * 1.45));
      bg.setAttribute("width", textWidth);
      bg.setAttribute("height", fontSize * 1.4);
      bg.setAttribute("rx", fontSize * 0.25);
      g.appendChild(bg);
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("class", "label");
      text.setAttribute("x", labelX + fontSize * 0.3);
      text.setAttribute("y", Math.max(0, b.top - fontSize * 1.45) + fontSize * 1.05);
      text.setAttribute("font-size", fontSize);
      text.textContent = labelText;
      g.appendChild(text);
      const title = document.createElementNS(SVG, "title");
      title.textContent = "Face " + (i + 1) + ": quality " + pct(face.quality) + ", pan " + deg(face.pose.pan) +
        ", tilt " + deg(face.pose.tilt) + ", roll " + deg(face.pose.roll);
      g.appendChild(title);
      g.addEventListener("click", () => selectFace(i));
      svg.appendChild(g);
    });
    // The selected face on top.
    const selected = svg.querySelector("g.selected");
    if (selected) svg.appendChild(selected);
  }

  function listFaces() {
    const list = $("face-list");
    list.replaceChildren();
    state.photo.faces.forEach((face, i) => {
      const item = el("li", "face-item" + (i === state.selected ? " selected" : ""));
      item.dataset.index = String(i);
      item.appendChild(el("span", "face-num", String(i + 1)));
      const b = face.face_box;
      const meta = el("span", "meta",
        Math.round(b.right - b.left) + " px · pan " + deg(face.pose.pan) + " · tilt " + deg(face.pose.tilt) +
        (face.largest ? " · largest" : ""));
      item.appendChild(meta);
      item.appendChild(el("span", "quality " + qualityClass(face.quality), "Q " + pct(face.quality)));
      item.addEventListener("click", () => selectFace(i));
      list.appendChild(item);
    });
    $("side-empty").hidden = true;
    $("side-faces").hidden = state.photo.faces.length === 0;
  }

  function selectFace(i) {
    state.selected = i;
    const face = state.photo.faces[i];
    drawOverlay();
    for (const item of $("face-list").children) item.classList.toggle("selected", item.dataset.index === String(i));
    $("face-detail").hidden = false;
    $("face-title").textContent = "Face " + (i + 1);
    $("face-largest").hidden = !face.largest;
    drawFace($("face-crop"), $("photo"), face.face_box);
    const attrs = $("face-attrs");
    attrs.replaceChildren();
    const b = face.face_box;
    const rows = [
      ["Quality", pct(face.quality) + " / 100"],
      ["Frontal", pct(face.frontal_face_score) + " / 100"],
      ["Pan · tilt · roll", deg(face.pose.pan) + " · " + deg(face.pose.tilt) + " · " + deg(face.pose.roll)],
      ["Detector score", face.detector_score.toFixed(3)],
      ["Box", Math.round(b.left) + ", " + Math.round(b.top) + " — " + Math.round(b.right - b.left) + " × " +
        Math.round(b.bottom - b.top) + " px"],
    ];
    for (const [name, value] of rows) {
      attrs.appendChild(el("dt", "", name));
      attrs.appendChild(el("dd", "", value));
    }
  }

  for (const seg of document.querySelectorAll(".seg")) {
    seg.addEventListener("click", () => {
      state.mode = seg.dataset.mode;
      for (const other of document.querySelectorAll(".seg")) other.classList.toggle("active", other === seg);
      $("enroll-names").hidden = state.mode !== "new";
      $("enroll-submit").textContent = state.mode === "new" ? "Enroll this face" : "Add this face to the person";
    });
  }

  // The image a miiCloud write takes its largest face from: the photo itself for its largest face,
  // otherwise a crop around the chosen face, in which it is the largest.
  async function imageOfFace(i) {
    const photo = state.photo;
    const face = photo.faces[i];
    if (face.largest) return { blob: photo.file, name: photo.name };
    const b = face.face_box;
    const w = b.right - b.left;
    const h = b.bottom - b.top;
    const left = Math.max(0, Math.floor(b.left - w * 0.6));
    const top = Math.max(0, Math.floor(b.top - h * 0.6));
    const right = Math.min(photo.width, Math.ceil(b.right + w * 0.6));
    const bottom = Math.min(photo.height, Math.ceil(b.bottom + h * 0.6));
    const canvas = document.createElement("canvas");
    canvas.width = right - left;
    canvas.height = bottom - top;
    canvas.getContext("2d").drawImage($("photo"), left, top, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.95));
    if (!blob) throw new Error("The face could not be cut out of the photo.");
    return { blob, name: "face-" + (i + 1) + ".jpg" };
  }

  $("enroll-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearMessage();
    const i = state.selected;
    if (i < 0) return;
    const cpid = $("enroll-cpid").value.trim();
    if (!cpid) { showError("customer_person_id is required."); return; }
    guarded(async () => {
      const image = await imageOfFace(i);
      const path = "/miicloud/person/" + encodeURIComponent(cpid);
      if (state.mode === "new") {
        const fields = { customer_person_id: cpid, first_name: $("enroll-first").value.trim(), last_name: $("enroll-last").value.trim() };
        const done = await api("/miicloud/person", { method: "POST", body: formOf(fields, image.blob, image.name) });
        showNotice("Enrolled face " + (i + 1) + " as " + (personName(done)) + " (" + done.customer_person_id + ").");
      } else {
        // miiCloud's PUT replaces the profile: send the stored one back with the new image.
        const person = await api(path);
        const fields = { first_name: person.first_name, last_name: person.last_name, email: person.email, phone: person.phone };
        const done = await api(path, { method: "PUT", body: formOf(fields, image.blob, image.name) });
        showNotice("Added face " + (i + 1) + " to " + personName(done) + "; the person now has " +
          (done.images ? done.images.length : "more") + " images.");
      }
      state.session.templates += 1;
    }, $("enroll-submit"));
  });

  // ---- search ---------------------------------------------------------------------------------
  $("search-all").addEventListener("click", () => {
    clearMessage();
    if (!state.photo) return;
    const url = state.photo.url;
    guarded(async () => {
      const found = await api("/console/api/search", { method: "POST", body: formOf({}, state.photo.file) });
      if (!state.photo || state.photo.url !== url) return;
      showResults(found);
    }, $("search-all"));
  });

  function showResults(found) {
    const list = $("result-list");
    list.replaceChildren();
    const known = found.faces.filter((f) => f.match_status === "known").length;
    $("results-note").textContent = found.faces.length + " faces · " + known + " known at the threshold " +
      found.known_threshold + " (scores 0–9999)";
    found.faces.forEach((face, i) => {
      const row = el("article", "result-face");
      const probe = el("div", "probe");
      const crop = el("canvas", "crop");
      probe.appendChild(crop);
      const caption = el("div");
      caption.appendChild(el("div", "probe-title", "Face " + (i + 1)));
      caption.appendChild(el("span", "verdict " + face.match_status, face.match_status === "known" ? "Known" : "Unknown"));
      probe.appendChild(caption);
      row.appendChild(probe);
      const candidates = el("div", "candidates");
      if (face.candidates.length === 0) {
        candidates.appendChild(el("p", "no-candidates", "No enrolled person to compare with."));
      }
      face.candidates.forEach((c, rank) => candidates.appendChild(candidateCard(c, rank, found.known_threshold)));
      row.appendChild(candidates);
      list.appendChild(row);
      drawFace(crop, $("photo"), face.face_box);
    });
    $("results").hidden = false;
    $("results").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function candidateCard(c, rank, threshold) {
    const card = el("div", "candidate" + (c.known ? " known" : ""));
    card.appendChild(el("div", "rank", "#" + (rank + 1) + (c.known ? " · match" : "")));
    const crop = el("canvas", "crop");
    card.appendChild(crop);
    card.appendChild(el("div", "who-name", personName(c)));
    card.appendChild(el("div", "cpid", c.customer_person_id || c.miicloud_person_id));
    const scores = el("div", "scores");
    scores.appendChild(el("span", "", "score " + c.score));
    scores.appendChild(el("strong", "", Math.round(c.confidence * 100) + " %"));
    card.appendChild(scores);
    const bar = el("div", "bar");
    const fill = el("span");
    fill.style.width = Math.min(100, c.score / 100) + "%";
    bar.appendChild(fill);
    const mark = el("i");
    mark.style.left = Math.min(100, threshold / 100) + "%";
    mark.title = "known threshold " + threshold;
    bar.appendChild(mark);
    card.appendChild(bar);
    if (c.best_face) {
      const box = c.best_face.face_box;
      faceImage(c.best_face.face_id).then((img) => drawFace(crop, img, box), (e) => showError(e.message));
    }
    return card;
  }

  // ---- gallery --------------------------------------------------------------------------------
  $("person-search").addEventListener("submit", (event) => {
    event.preventDefault();
    state.prefix = $("person-prefix").value.trim();
    state.pages = [""];
    state.pageIndex = 0;
    showGalleryList();
    loadPersons();
  });
  $("page-next").addEventListener("click", () => { state.pageIndex += 1; loadPersons(); });
  $("page-prev").addEventListener("click", () => { state.pageIndex = Math.max(0, state.pageIndex - 1); loadPersons(); });
  $("back-to-gallery").addEventListener("click", () => { showGalleryList(); loadPersons(); });

  function showGalleryList() {
    $("gallery-list").hidden = false;
    $("person-view").hidden = true;
    $("confirm-box").hidden = true;
    $("delete-person").hidden = false;
  }

  async function loadPersons() {
    const after = state.pages[state.pageIndex] || "";
    const query = new URLSearchParams({ prefix: state.prefix, limit: "24" });
    if (after) query.set("after", after);
    const page = await guarded(() => api("/console/api/persons?" + query));
    if (!page) return;
    state.pages[state.pageIndex + 1] = page.next || null;
    const grid = $("person-grid");
    grid.replaceChildren();
    for (const p of page.persons) grid.appendChild(personCard(p));
    const first = state.pageIndex * 24 + 1;
    $("gallery-note").textContent = page.persons.length === 0
      ? (state.prefix ? "No person's id starts with “" + state.prefix + "”." : "No persons enrolled yet.")
      : (state.prefix ? "ids starting with “" + state.prefix + "” · " : "") + "showing " + first + "–" +
        (first + page.persons.length - 1);
    $("page-label").textContent = "Page " + (state.pageIndex + 1);
    $("page-prev").disabled = state.pageIndex === 0;
    $("page-next").disabled = !page.next;
  }

  function personCard(p) {
    const card = el("button", "person-card");
    card.type = "button";
    card.dataset.cpid = p.customer_person_id || "";
    const crop = el("canvas", "crop");
    card.appendChild(crop);
    card.appendChild(el("div", "who-name", personName(p)));
    card.appendChild(el("div", "cpid", p.customer_person_id || p.miicloud_person_id));
    card.appendChild(el("div", "count", p.images === 1 ? "1 image" : p.images + " images"));
    if (p.newest_face) {
      const box = p.newest_face.face_box;
      faceImage(p.newest_face.face_id).then((img) => drawFace(crop, img, box), (e) => showError(e.message));
    }
    card.addEventListener("click", () => { if (p.customer_person_id) openPerson(p.customer_person_id); });
    return card;
  }

  async function loadTags() {
    const found = await guarded(() => api("/console/api/tags"));
    if (!found) return;
    const list = $("tag-list");
    list.replaceChildren();
    if (found.tags.length === 0) list.appendChild(el("span", "muted", "No tags. NEC ID's /v1.1/tags creates them."));
    for (const tag of found.tags) list.appendChild(el("span", "chip", tag));
  }

  async function openPerson(cpid) {
    clearMessage();
    const loaded = await guarded(async () => {
      const path = encodeURIComponent(cpid);
      const [person, faces] = await Promise.all([
        api("/miicloud/person/" + path),
        api("/console/api/persons/" + path + "/faces"),
      ]);
      return { person, faces };
    });
    if (!loaded) return;
    const { person, faces } = loaded;
    state.person = person;
    $("gallery-list").hidden = true;
    $("person-view").hidden = false;
    $("confirm-box").hidden = true;
    $("delete-person").hidden = false;
    $("person-name").textContent = personName(person);
    const fields = $("person-fields");
    fields.replaceChildren();
    const rows = [["customer_person_id", person.customer_person_id], ["miicloud_person_id", person.miicloud_person_id],
      ["email", person.email], ["phone", person.phone]];
    for (const [name, value] of rows) {
      if (!value) continue;
      fields.appendChild(el("dt", "", name));
      fields.appendChild(el("dd", "", value));
    }
    $("person-faces-title").textContent = faces.faces.length === 1 ? "1 enrolled image" : faces.faces.length + " enrolled images";
    const grid = $("person-faces");
    grid.replaceChildren();
    for (const f of faces.faces) {
      const card = el("figure", "stored-face");
      card.style.margin = "0";
      const crop = el("canvas", "crop");
      card.appendChild(crop);
      card.appendChild(el("figcaption", "meta", f.image + " · " + f.created.replace("T", " ").slice(0, 19)));
      grid.appendChild(card);
      faceImage(f.face_id).then((img) => drawFace(crop, img, f.face_box), (e) => showError(e.message));
    }
  }

  $("delete-person").addEventListener("click", () => {
    $("delete-person").hidden = true;
    $("confirm-box").hidden = false;
  });
  $("cancel-delete").addEventListener("click", () => {
    $("delete-person").hidden = false;
    $("confirm-box").hidden = true;
  });
  $("confirm-delete").addEventListener("click", () => {
    const person = state.person;
    if (!person) return;
    guarded(async () => {
      await api("/miicloud/person/" + encodeURIComponent(person.customer_person_id), { method: "DELETE" });
      showNotice("Deleted " + personName(person) + " (" + person.customer_person_id + ") and every image.");
      state.person = null;
      state.pages = [""];
      state.pageIndex = 0;
      showGalleryList();
      await loadPersons();
    }, $("confirm-delete"));
  });

  // ---- unknown people -------------------------------------------------------------------------
  const UNKNOWN = "/facegate/v1/unknown-people";
  const UNKNOWN_PAGE = 20;
  const CROPS_SHOWN = 8;

  $("unknown-refresh").addEventListener("click", () => { clearMessage(); loadUnknown(true); });
  $("unknown-more").addEventListener("click", () => loadUnknown(false));
  $("unknown-merge").addEventListener("click", () => {
    const [into, from] = state.unknownPicked;
    if (!into || !from) return;
    clearMessage();
    guarded(async () => {
      const merged = await api(UNKNOWN + "/" + encodeURIComponent(into) + "/merge", { method: "POST", json: { from } });
      showNotice("Merged two unknown people: the group now holds " + sightingCount(merged.sightings) + ".");
      await loadUnknown(true);
    }, $("unknown-merge"));
  });

  function forgetCrops() {
    for (const url of cropUrls.splice(0)) URL.revokeObjectURL(url);
  }

  function sightingCount(n) { return n === 1 ? "1 sighting" : n + " sightings"; }

  function when(time) { return time.replace("T", " ").slice(0, 19); }

  // The first page again (`fresh`), or the next one added below those shown.
  async function loadUnknown(fresh) {
    const query = new URLSearchParams({ limit: String(UNKNOWN_PAGE) });
    if (!fresh && state.unknownAfter) query.set("after", state.unknownAfter);
    const load = ++state.unknownLoads;
    const page = await guarded(() => api(UNKNOWN + "?" + query), $("unknown-more"));
    if (!page || state.view !== "unknown" || load !== state.unknownLoads) return;
    const list = $("unknown-list");
    if (fresh) {
      forgetCrops();
      list.replaceChildren();
      state.unknownPicked = [];
    }
    for (const person of page.unknown_people) list.appendChild(unknownCard(person));
    state.unknownAfter = page.next_after || null;
    $("unknown-more").hidden = !state.unknownAfter;
    const shown = list.children.length;
    $("unknown-empty").hidden = shown > 0;
    $("unknown-note").textContent = shown === 0 ? "" :
      (shown === 1 ? "1 group" : shown + " groups") + (state.unknownAfter ? " shown, more below" : "");
    pickedChanged();
  }

  function unknownCard(person) {
    const card = el("article", "unknown-group");
    card.dataset.id = person.id;
    const head = el("div", "unknown-head");
    const pick = el("label", "pick");
    const box = el("input");
    box.type = "checkbox";
    box.className = "unknown-pick";
    box.addEventListener("change", () => {
      state.unknownPicked = state.unknownPicked.filter((id) => id !== person.id);
      if (box.checked) state.unknownPicked.push(person.id);
      pickedChanged();
    });
    pick.appendChild(box);
    pick.appendChild(el("span", "mono", person.id));
    head.appendChild(pick);
    head.appendChild(el("span", "pill sighting-count", sightingCount(person.sightings)));
    card.appendChild(head);

    const crops = el("div", "sighting-crops");
    card.appendChild(crops);
    showCrops(person, crops);

    const times = el("dl", "fields seen");
    for (const [name, value] of [["first seen", person.first_seen], ["last seen", person.last_seen]]) {
      times.appendChild(el("dt", "", name));
      times.appendChild(el("dd", "", when(value)));
    }
    card.appendChild(times);
    card.appendChild(unknownActions(person));
    return card;
  }

  // Up to CROPS_SHOWN of the person's sightings, each fetched with the token, and how many more.
  async function showCrops(person, crops) {
    const seen = await guarded(() => api(UNKNOWN + "/" + encodeURIComponent(person.id) + "/sightings"));
    if (!seen) return;
    const shown = seen.sightings.slice(0, CROPS_SHOWN);
    for (const sighting of shown) {
      const slot = el("div", "sighting-crop");
      slot.title = when(sighting.seen_at) + " · quality " + Math.round(sighting.quality * 100);
      crops.appendChild(slot);
      api("/facegate/v1/sightings/" + encodeURIComponent(sighting.id) + "/crop", { raw: true })
        .then((response) => response.blob())
        .then((blob) => {
          const url = URL.createObjectURL(blob);
          cropUrls.push(url);
          return loadImage(url);
        })
        .then((img) => { img.alt = "A face of this unknown person"; slot.appendChild(img); }, (e) => showError(e.message));
    }
    const more = seen.sightings.length - shown.length;
    if (more > 0) crops.appendChild(el("div", "sighting-more", "+" + more));
  }

  function unknownActions(person) {
    const bar = el("div", "unknown-actions");
    const promote = el("button", "ghost small promote", "Promote");
    const remove = el("button", "ghost small delete", "Delete");
    promote.type = remove.type = "button";
    bar.append(promote, remove);

    // Promote: asks for the customer_person_id to enroll the group as.
    const form = el("form", "promote-form");
    form.autocomplete = "off";
    form.hidden = true;
    const cpid = el("input", "promote-cpid");
    cpid.placeholder = "customer_person_id";
    cpid.maxLength = 128;
    cpid.spellcheck = false;
    cpid.required = true;
    cpid.setAttribute("aria-label", "customer_person_id to enroll this group as");
    const enroll = el("button", "primary small promote-go", "Enroll");
    const cancelPromote = el("button", "ghost small", "Cancel");
    cancelPromote.type = "button";
    form.append(cpid, enroll, cancelPromote);

    const confirm = el("div", "confirm");
    confirm.hidden = true;
    const confirmDelete = el("button", "danger small confirm-delete", "Delete");
    const cancelDelete = el("button", "ghost small", "Cancel");
    confirmDelete.type = cancelDelete.type = "button";
    confirm.append(el("span", "", "Delete this group and its " + sightingCount(person.sightings) + "?"),
      confirmDelete, cancelDelete);

    const idle = () => { bar.hidden = false; form.hidden = true; confirm.hidden = true; };
    promote.addEventListener("click", () => { bar.hidden = true; form.hidden = false; cpid.focus(); });
    remove.addEventListener("click", () => { bar.hidden = true; confirm.hidden = false; });
    cancelPromote.addEventListener("click", idle);
    cancelDelete.addEventListener("click", idle);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearMessage();
      const id = cpid.value.trim();
      if (!id) { showError("customer_person_id is required."); return; }
      guarded(async () => {
        const done = await api(UNKNOWN + "/" + encodeURIComponent(person.id) + "/promote",
          { method: "POST", json: { customer_person_id: id } });
        if (state.session) state.session.templates += done.faces;
        showNotice("Enrolled the unknown person as " + done.customer_person_id + " with " +
          (done.faces === 1 ? "1 face" : done.faces + " faces") + ".");
        await loadUnknown(true);
      }, enroll);
    });
    confirmDelete.addEventListener("click", () => {
      clearMessage();
      guarded(async () => {
        const done = await api(UNKNOWN + "/" + encodeURIComponent(person.id), { method: "DELETE" });
        showNotice("Deleted the unknown person and its " + sightingCount(done.deleted_sightings) + ".");
        await loadUnknown(true);
      }, confirmDelete);
    });

    const actions = el("div", "unknown-foot");
    actions.append(bar, form, confirm);
    return actions;
  }

  function pickedChanged() {
    const picked = state.unknownPicked.length;
    const merge = $("unknown-merge");
    merge.disabled = picked !== 2;
    merge.textContent = picked === 2 ? "Merge selected (2)" : "Merge selected";
    merge.title = picked === 2 ? "Moves the second ticked group into the first" : "Tick two groups to merge";
  }

  // ---- bulk jobs ------------------------------------------------------------------------------
  $("jobs-refresh").addEventListener("click", () => loadJobs());

  function stopJobsTimer() {
    if (state.jobsTimer) clearTimeout(state.jobsTimer);
    state.jobsTimer = null;
  }

  async function loadJobs() {
    stopJobsTimer();
    const found = await guarded(() => api("/console/api/jobs?limit=20"));
    if (!found || state.view !== "jobs") return;
    const rows = $("job-rows");
    rows.replaceChildren();
    let running = 0;
    for (const job of found.jobs) {
      const tr = el("tr");
      tr.appendChild(el("td", "mono", job.batch_id));
      tr.appendChild(el("td", "", job.created.replace("T", " ").slice(0, 19)));
      const progress = el("td");
      const wrap = el("div", "progress");
      const done = job.records > 0 ? job.processed / job.records : 1;
      const bar = el("div", "bar" + (done >= 1 ? " done" : ""));
      const fill = el("span");
      fill.style.width = Math.round(done * 100) + "%";
      bar.appendChild(fill);
      wrap.appendChild(bar);
      wrap.appendChild(el("span", "", job.processed + " / " + job.records));
      progress.appendChild(wrap);
      tr.appendChild(progress);
      tr.appendChild(el("td", "num", String(job.succeeded)));
      tr.appendChild(el("td", "num", String(job.failed)));
      rows.appendChild(tr);
      if (job.processed < job.records) running += 1;
    }
    $("jobs-empty").hidden = found.jobs.length > 0;
    $("jobs-note").textContent = found.jobs.length === 0 ? "" :
      found.jobs.length + " newest" + (running ? " · " + running + " running, updating live" : " · all done");
    // Live progress while a job runs: every two seconds, only while this view is open.
    if (running > 0) state.jobsTimer = setTimeout(loadJobs, 2000);
  }

  // ---- start ----------------------------------------------------------------------------------
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((e) => signOut(e.message));
  } else {
    signOut();
  }
})();
