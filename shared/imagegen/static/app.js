// The imagegen playground: plain ES module, no dependencies. It only talks to the public API
// (README.md), with the API key the user pasted (kept in localStorage).

const KEY_STORAGE = "imagegen.apiKey";
const URL_STORAGE = "imagegen.apiUrl";
const GENERATIONS = "/v1/images/generations";
const TERMINAL = new Set(["completed", "failed", "canceled"]);
const RUNNING = new Set(["queued", "submitted"]);
const PER_PAGE = 8;
const POLL_MS = 600;

const $ = (selector) => document.querySelector(selector);
const state = { models: [], common: {}, loras: [], historyPage: 1, historyTotal: 0, aspect: null };

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = Array.isArray(details) ? details : [];
  }
}

function apiBase() {
  return (localStorage.getItem(URL_STORAGE) || "").replace(/\/+$/, "");
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${localStorage.getItem(KEY_STORAGE) || ""}` };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(apiBase() + path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the API (${err.message})`);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.message || `HTTP ${response.status}`, error.details);
  }
  return data;
}

// -- errors --------------------------------------------------------------------------------

// A server field (`loras.0.scale`, `imageSize.width`) → the id of the message next to it.
function errorSlot(field) {
  const head = String(field || "").split(".")[0];
  if (head === "imageSize") {
    const leaf = String(field).split(".").pop();
    if (leaf === "width" || leaf === "height") return `err-${leaf}`;
  }
  if (head === "loraId") return "err-loras";
  return document.getElementById(`err-${head}`) ? `err-${head}` : null;
}

function clearErrors() {
  $("#error").textContent = "";
  for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function fieldError(field, message) {
  const slot = errorSlot(field);
  const el = slot && document.getElementById(slot);
  if (!el || el.closest("[hidden]")) return false;
  el.textContent = el.textContent ? `${el.textContent} ${message}` : message;
  const control = document.querySelector(`[aria-describedby~="${slot}"]`);
  if (control) control.setAttribute("aria-invalid", "true");
  return true;
}

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    $("#error").textContent = `${err.message} — check the API key.`;
    return;
  }
  const unplaced = [];
  for (const detail of err.details || []) {
    if (!fieldError(detail.field, detail.message)) {
      unplaced.push(detail.field ? `${detail.field}: ${detail.message}` : detail.message);
    }
  }
  $("#error").textContent = [err.message, ...unplaced].join("\n");
  const first = document.querySelector("[aria-invalid=true]");
  if (first) first.focus();
}

// -- sign in -------------------------------------------------------------------------------

function showSignedIn(signedIn) {
  $("#sign-in-panel").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#sign-out").hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  clearErrors();
  const key = $("#api-key").value.trim();
  if (!key) {
    $("#error").textContent = "Paste an API key first.";
    $("#api-key").focus();
    return;
  }
  localStorage.setItem(KEY_STORAGE, key);
  const url = $("#api-url").value.trim();
  if (url) localStorage.setItem(URL_STORAGE, url);
  else localStorage.removeItem(URL_STORAGE);
  await start();
}

function signOut() {
  localStorage.removeItem(KEY_STORAGE);
  $("#api-key").value = "";
  $("#usage").textContent = "";
  showSignedIn(false);
  $("#api-key").focus();
}

async function start() {
  try {
    const [models, loras] = await Promise.all([api("GET", "/v1/models"), api("GET", "/v1/loras")]);
    state.models = models.models;
    state.common = models.common || {};
    state.loras = (loras.loras || []).filter((l) => !l.status || l.status === "ready");
    buildForm(models.defaultModel);
    showSignedIn(true);
    refreshUsage();
  } catch (err) {
    showSignedIn(false);
    if (err.status === 401) localStorage.removeItem(KEY_STORAGE);
    showError(err);
  }
}

async function refreshUsage() {
  try {
    const u = await api("GET", "/v1/usage");
    const cost = Number(u.estimatedCostUsd || 0).toFixed(2);
    const mp = Number(u.megapixels || 0).toFixed(1);
    const limit = u.limits && u.limits.enforced ? ` of ${u.limits.monthlyMegapixels}` : "";
    $("#usage").textContent =
      `${u.month}: ${u.generations} generations, ${u.images} images, ${mp}${limit} MP, ≈ $${cost}`;
  } catch {
    $("#usage").textContent = "";
  }
}

// -- the form ------------------------------------------------------------------------------

function option(value, text, selected = false) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text;
  el.selected = selected;
  return el;
}

function currentModel() {
  return state.models.find((m) => m.id === $("#model").value) || state.models[0];
}

function buildForm(defaultModel) {
  const model = $("#model");
  const chosen = model.value || defaultModel;
  model.replaceChildren(...state.models.map((m) => option(m.id, m.title || m.id, m.id === chosen)));
  const presets = state.common.imageSizePresets || {};
  $("#size").replaceChildren(
    ...Object.entries(presets).map(([name, s]) =>
      option(name, `${name.replaceAll("_", " ")} (${s.width}×${s.height})`, name === "landscape_4_3"),
    ),
    option("custom", "Custom…"),
  );
  $("#aspectRatio").replaceChildren(
    ...(state.common.aspectRatios || []).map((r) => option(r, r, r === "1:1")),
  );
  const n = state.common.numImages || { minimum: 1, maximum: 5 };
  $("#numImages").min = n.minimum;
  $("#numImages").max = n.maximum;
  const custom = state.common.customSize || {};
  for (const id of ["#width", "#height"]) {
    $(id).min = custom.minimum || 256;
    $(id).max = custom.maximum || 2048;
    $(id).step = custom.multipleOf || 8;
  }
  applyModel();
}

function applyModel() {
  const model = currentModel();
  const params = model.parameters || {};
  for (const el of document.querySelectorAll("[data-param]")) {
    el.hidden = !(el.dataset.param in params);
  }
  for (const el of document.querySelectorAll("[data-size]")) {
    el.hidden = el.dataset.size !== model.sizeMode;
  }
  $("#custom-size").hidden = model.sizeMode !== "image_size" || $("#size").value !== "custom";
  for (const name of ["guidanceScale", "steps"]) {
    const p = params[name];
    if (!p) continue;
    const input = document.getElementById(name);
    input.min = p.minimum;
    input.max = p.maximum;
    input.placeholder = `${p.default} (${p.minimum}–${p.maximum})`;
  }
  if (params.safetyTolerance) {
    const p = params.safetyTolerance;
    $("#safetyTolerance").replaceChildren(...p.choices.map((c) => option(c, c, c === p.default)));
  }
  if (params.loras) {
    const p = params.loras;
    const lora = $("#lora");
    const keep = lora.value;
    lora.replaceChildren(
      ...(p.required ? [] : [option("", "None")]),
      ...state.loras.map((l) => {
        const name = [l.firstName, l.lastName].filter(Boolean).join(" ") || l.trigger || l.id;
        return option(l.id, `${name} (${l.id})`, l.id === keep);
      }),
    );
    if (!lora.options.length) lora.append(option("", "No LoRAs yet (add one: loras add)"));
    $("#loraScale").min = p.minimum;
    $("#loraScale").max = p.maximum;
    $("#loraScale").placeholder = String(p.default);
  }
  $("#model-help").textContent = [
    model.needsInputImage ? "Needs an input image URL." : "",
    model.needsLora ? "Needs a LoRA." : "",
  ].join(" ").trim();
}

function onSizeChange() {
  const value = $("#size").value;
  $("#custom-size").hidden = value !== "custom";
  if (value !== "custom") {
    const preset = (state.common.imageSizePresets || {})[value];
    if (preset) {
      $("#width").value = preset.width;
      $("#height").value = preset.height;
    }
  }
  lockAspect();
}

function lockAspect() {
  const w = Number($("#width").value);
  const h = Number($("#height").value);
  state.aspect = $("#lockAspect").checked && w > 0 && h > 0 ? w / h : null;
}

function keepAspect(changed) {
  if (!state.aspect) return;
  const step = Number($("#width").step) || 8;
  const round = (v) => Math.max(step, Math.round(v / step) * step);
  if (changed === "width") $("#height").value = round(Number($("#width").value) / state.aspect);
  else $("#width").value = round(Number($("#height").value) * state.aspect);
}

// Mirrors the server's checks (GenerationRequest and the model's parameters): each problem
// is [field, message], with the server's wording where it has one.
function validate(values, model) {
  const problems = [];
  const params = model.parameters || {};
  const prompt = values.prompt;
  if (!prompt.trim()) problems.push(["prompt", "Enter a prompt."]);
  else if (prompt.length > 2000) {
    problems.push(["prompt", `At most 2000 characters (this one has ${prompt.length}).`]);
  }
  if (values.negativePrompt && values.negativePrompt.length > 2000) {
    problems.push(["negativePrompt", "At most 2000 characters."]);
  }
  const n = state.common.numImages || { minimum: 1, maximum: 5 };
  if (!Number.isInteger(values.numImages) || values.numImages < n.minimum || values.numImages > n.maximum) {
    problems.push(["numImages", `A whole number from ${n.minimum} to ${n.maximum}.`]);
  }
  if (model.sizeMode === "image_size" && values.size === "custom") {
    const c = state.common.customSize || { minimum: 256, maximum: 2048, multipleOf: 8, maxMegapixels: 4 };
    for (const side of ["width", "height"]) {
      const v = values[side];
      if (!Number.isInteger(v) || v < c.minimum || v > c.maximum) {
        problems.push([side, `Between ${c.minimum} and ${c.maximum} pixels.`]);
      } else if (v % c.multipleOf) {
        problems.push([side, `A multiple of ${c.multipleOf}.`]);
      }
    }
    if (values.width * values.height > c.maxMegapixels * 1_000_000 + 1e-6) {
      problems.push(["width", `Width × height must be at most ${c.maxMegapixels} megapixels.`]);
    }
  }
  for (const name of ["guidanceScale", "steps"]) {
    const p = params[name];
    const v = values[name];
    if (!p || v === null) continue;
    if (Number.isNaN(v) || v < p.minimum || v > p.maximum || (p.type === "integer" && !Number.isInteger(v))) {
      const kind = p.type === "integer" ? "A whole number" : "A number";
      problems.push([name, `${kind} from ${p.minimum} to ${p.maximum}.`]);
    }
  }
  if (values.seed !== "" && !/^(-1|\d{1,39})$/.test(values.seed)) {
    problems.push(["seed", "A whole number (0 or more), or empty for a random one."]);
  }
  if (params.loras) {
    if (params.loras.required && !values.lora) problems.push(["loras", "This model needs a LoRA."]);
    const s = values.loraScale;
    if (values.lora && s !== null && (Number.isNaN(s) || s < params.loras.minimum || s > params.loras.maximum)) {
      problems.push(["loras", `Scale from ${params.loras.minimum} to ${params.loras.maximum}.`]);
    }
  }
  if (params.imageUrl && params.imageUrl.required && !values.imageUrl) {
    problems.push(["imageUrl", "This model needs an input image URL."]);
  }
  return problems;
}

function numberOrNull(id) {
  const raw = document.getElementById(id).value.trim();
  return raw === "" ? null : Number(raw);
}

function readForm() {
  return {
    model: $("#model").value,
    prompt: $("#prompt").value,
    negativePrompt: $("#negativePrompt").value,
    imageUrl: $("#imageUrl").value.trim(),
    lora: $("#lora").value,
    loraScale: numberOrNull("loraScale"),
    numImages: Number($("#numImages").value),
    size: $("#size").value,
    aspectRatio: $("#aspectRatio").value,
    width: Number($("#width").value),
    height: Number($("#height").value),
    guidanceScale: numberOrNull("guidanceScale"),
    steps: numberOrNull("steps"),
    safetyTolerance: $("#safetyTolerance").value,
    seed: $("#seed").value.trim(),
  };
}

// The request body as JSON text: seeds can pass 2^53, so they go in as written.
function requestBody(values, model) {
  const params = model.parameters || {};
  const body = { model: model.id, prompt: values.prompt, numImages: values.numImages };
  if (params.negativePrompt && values.negativePrompt) body.negativePrompt = values.negativePrompt;
  if (params.imageUrl && values.imageUrl) body.imageUrl = values.imageUrl;
  if (params.loras && values.lora) {
    body.loras = [{ id: values.lora, ...(values.loraScale !== null ? { scale: values.loraScale } : {}) }];
  }
  if (model.sizeMode === "aspect_ratio") body.aspectRatio = values.aspectRatio;
  else if (values.size === "custom") Object.assign(body, { width: values.width, height: values.height });
  else body.imageSize = values.size;
  if (params.guidanceScale && values.guidanceScale !== null) body.guidanceScale = values.guidanceScale;
  if (params.steps && values.steps !== null) body.steps = values.steps;
  if (params.safetyTolerance && values.safetyTolerance) body.safetyTolerance = values.safetyTolerance;
  let text = JSON.stringify(body);
  if (values.seed !== "") text = `${text.slice(0, -1)},"seed":${values.seed}}`;
  return text;
}

// -- generating ----------------------------------------------------------------------------

function showProgress(status, note = "") {
  const order = ["queued", "submitted", "completed"];
  const at = order.indexOf(status);
  $("#progress").hidden = false;
  for (const li of document.querySelectorAll("#progress li")) {
    const i = order.indexOf(li.dataset.step);
    li.className = "";
    if (status === "failed" || status === "canceled") {
      if (li.dataset.step === "completed") {
        li.className = "bad";
        li.textContent = status === "failed" ? "Failed" : "Canceled";
      }
      continue;
    }
    if (li.dataset.step === "completed") li.textContent = "Completed";
    if (i < at || (i === at && status === "completed")) li.className = "done";
    else if (i === at) li.className = "current";
  }
  $("#progress-text").textContent = note;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function generate(event) {
  event.preventDefault();
  clearErrors();
  const model = currentModel();
  const values = readForm();
  const problems = validate(values, model);
  if (problems.length) {
    for (const [field, message] of problems) {
      if (!fieldError(field, message)) $("#error").textContent += `${field}: ${message}\n`;
    }
    const first = document.querySelector("[aria-invalid=true]");
    if (first) first.focus();
    return;
  }
  const button = $("#generate");
  button.disabled = true;
  button.textContent = "Generating…";
  try {
    const accepted = await api("POST", GENERATIONS, requestBody(values, model));
    showProgress(accepted.status, `Generation ${accepted.id}`);
    let record = accepted;
    const started = Date.now();
    while (!TERMINAL.has(record.status)) {
      await sleep(POLL_MS);
      record = await api("GET", `${GENERATIONS}/${accepted.id}`);
      const seconds = Math.round((Date.now() - started) / 1000);
      showProgress(record.status, `Generation ${record.id} · ${seconds} s`);
    }
    if (record.status !== "completed") {
      const why = record.error ? `: ${record.error.message || record.error.code || record.error}` : "";
      $("#error").textContent = `The generation ${record.status}${why}`;
    }
    showResults(record);
    refreshUsage();
    if (!$("#panel-history").hidden) loadHistory();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

function imageFigure(record, image, index) {
  const figure = document.createElement("figure");
  const link = document.createElement("a");
  link.href = image.url;
  link.target = "_blank";
  link.rel = "noopener";
  const img = document.createElement("img");
  img.dataset.testid = "result-image";
  img.src = image.thumbnailUrl || image.url;
  img.alt = `Image ${index + 1}: ${record.prompt}`;
  img.loading = "lazy";
  if (image.width && image.height) img.style.setProperty("--ratio", `${image.width} / ${image.height}`);
  link.append(img);
  const caption = document.createElement("figcaption");
  const info = document.createElement("span");
  info.textContent = `${image.width}×${image.height} · seed ${image.seed ?? record.seed ?? "?"} · ${record.model}`;
  const reuse = document.createElement("button");
  reuse.type = "button";
  reuse.textContent = "Reuse these settings";
  reuse.setAttribute("aria-label", `Reuse the settings of image ${index + 1}`);
  reuse.addEventListener("click", () => reuseSettings(record, image));
  caption.append(info, reuse);
  figure.append(link, caption);
  return figure;
}

function showResults(record) {
  const ok = (record.images || []).filter((image) => image.url);
  $("#results").replaceChildren(...ok.map((image, i) => imageFigure(record, image, i)));
  $("#results-empty").hidden = ok.length > 0;
}

function reuseSettings(record, image) {
  selectTab("generate");
  const params = record.parameters || {};
  if (state.models.some((m) => m.id === record.model)) $("#model").value = record.model;
  applyModel();
  $("#prompt").value = record.prompt || "";
  $("#negativePrompt").value = params.negativePrompt || "";
  $("#numImages").value = record.numImages || params.numImages || 1;
  const size = params.imageSize;
  if (typeof size === "string") $("#size").value = size;
  else if (record.width && record.height) {
    $("#size").value = "custom";
    $("#width").value = record.width;
    $("#height").value = record.height;
  }
  if (params.aspectRatio) $("#aspectRatio").value = params.aspectRatio;
  $("#guidanceScale").value = params.guidanceScale ?? "";
  $("#steps").value = params.steps ?? "";
  if (params.safetyTolerance) $("#safetyTolerance").value = params.safetyTolerance;
  const lora = (record.loras || [])[0];
  if (lora) {
    $("#lora").value = lora.id;
    $("#loraScale").value = lora.scale ?? "";
  }
  $("#seed").value = image && image.seed != null ? String(image.seed) : String(record.seed ?? "");
  $("#advanced").open = true;
  $("#custom-size").hidden = currentModel().sizeMode !== "image_size" || $("#size").value !== "custom";
  $("#prompt").focus();
}

// -- history -------------------------------------------------------------------------------

function historyItem(record) {
  const li = document.createElement("li");
  li.dataset.testid = "history-item";
  li.dataset.id = record.id;
  const thumbs = document.createElement("div");
  thumbs.className = "thumbs";
  for (const [i, image] of (record.images || []).filter((im) => im.url).slice(0, 3).entries()) {
    const a = document.createElement("a");
    a.href = image.url;
    a.target = "_blank";
    a.rel = "noopener";
    const img = document.createElement("img");
    img.src = image.thumbnailUrl || image.url;
    img.alt = `Image ${i + 1} of “${record.prompt}”`;
    img.loading = "lazy";
    a.append(img);
    thumbs.append(a);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const prompt = document.createElement("p");
  prompt.textContent = record.prompt;
  const line = document.createElement("p");
  line.className = "muted";
  const status = document.createElement("span");
  status.className = `status ${record.status}`;
  status.textContent = record.status;
  const when = record.createdAt ? new Date(record.createdAt).toLocaleString() : "";
  line.append(status, ` ${record.model} · ${record.numImages} × ${record.width}×${record.height} · ${when}`);
  const actions = document.createElement("div");
  actions.className = "actions";
  const label = record.prompt.length > 40 ? `${record.prompt.slice(0, 40)}…` : record.prompt;
  if (record.status === "completed") {
    const reuse = button("Reuse these settings", `Reuse the settings of “${label}”`, () =>
      reuseSettings(record, (record.images || [])[0]),
    );
    actions.append(reuse);
  }
  if (RUNNING.has(record.status)) {
    actions.append(button("Cancel", `Cancel “${label}”`, () => cancelGeneration(record)));
  }
  const del = button("Delete", `Delete “${label}”`, () => deleteGeneration(record));
  del.classList.add("danger");
  actions.append(del);
  meta.append(prompt, line, actions);
  li.append(thumbs, meta);
  return li;
}

function button(text, label, onClick) {
  const el = document.createElement("button");
  el.type = "button";
  el.textContent = text;
  el.setAttribute("aria-label", label);
  el.addEventListener("click", onClick);
  return el;
}

async function loadHistory() {
  try {
    const page = await api("GET", `${GENERATIONS}?page=${state.historyPage}&perPage=${PER_PAGE}`);
    state.historyTotal = page.total;
    const items = page.images || [];
    const list = $("#history");
    list.replaceChildren(...items.map(historyItem));
    if (!items.length) {
      const empty = document.createElement("li");
      empty.textContent = "Nothing yet.";
      list.append(empty);
    }
    const pages = Math.max(1, Math.ceil(page.total / PER_PAGE));
    $("#history-page").textContent = `Page ${state.historyPage} of ${pages} (${page.total} in all)`;
    $("#history-prev").disabled = state.historyPage <= 1;
    $("#history-next").disabled = state.historyPage >= pages;
  } catch (err) {
    showError(err);
  }
}

async function deleteGeneration(record) {
  if (!window.confirm(`Delete “${record.prompt}” and its images? This cannot be undone.`)) return;
  clearErrors();
  try {
    await api("DELETE", `${GENERATIONS}/${record.id}`);
    const item = document.querySelector(`[data-testid=history-item][data-id="${record.id}"]`);
    if (item) item.remove();
    await loadHistory();
    refreshUsage();
  } catch (err) {
    showError(err);
  }
}

async function cancelGeneration(record) {
  clearErrors();
  try {
    await api("POST", `${GENERATIONS}/${record.id}/cancel`);
  } catch (err) {
    showError(err);
  }
  await loadHistory();
}

// -- tabs and wiring -----------------------------------------------------------------------

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  if (name === "history") loadHistory();
}

function wire() {
  $("#sign-in").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#generate-form").addEventListener("submit", generate);
  $("#model").addEventListener("change", () => {
    clearErrors();
    applyModel();
  });
  $("#size").addEventListener("change", onSizeChange);
  $("#lockAspect").addEventListener("change", lockAspect);
  $("#width").addEventListener("input", () => keepAspect("width"));
  $("#height").addEventListener("input", () => keepAspect("height"));
  $("#lora").addEventListener("change", () => {
    const chosen = state.loras.find((l) => l.id === $("#lora").value);
    if (chosen && chosen.defaultScale != null) $("#loraScale").value = chosen.defaultScale;
  });
  $("#tab-generate").addEventListener("click", () => selectTab("generate"));
  $("#tab-history").addEventListener("click", () => selectTab("history"));
  $(".tabs").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const next = $("#tab-generate").getAttribute("aria-selected") === "true" ? "history" : "generate";
    selectTab(next);
    document.getElementById(`tab-${next}`).focus();
  });
  $("#history-refresh").addEventListener("click", loadHistory);
  $("#history-prev").addEventListener("click", () => {
    state.historyPage = Math.max(1, state.historyPage - 1);
    loadHistory();
  });
  $("#history-next").addEventListener("click", () => {
    state.historyPage += 1;
    loadHistory();
  });
  $("#api-url").value = localStorage.getItem(URL_STORAGE) || "";
  if (localStorage.getItem(KEY_STORAGE)) start();
  else showSignedIn(false);
}

wire();
