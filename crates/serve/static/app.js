// Kiln's page: calls the JSON API of the server it came from. No build step, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = localStorage.getItem("kiln-token") || "";
tokenInput.addEventListener("change", () => {
  localStorage.setItem("kiln-token", tokenInput.value);
  loadModels();
});

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (tokenInput.value) h["Authorization"] = "Bearer " + tokenInput.value;
  return h;
}

async function call(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || response.statusText;
    throw new Error(response.status + ": " + message);
  }
  return body;
}

function postJson(path, payload) {
  return call(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(payload),
  });
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
}

function fill(list, items, render) {
  list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    const [text, score] = render(item);
    li.append(document.createTextNode(text));
    const s = document.createElement("span");
    s.className = "score";
    s.textContent = score;
    li.append(s);
    list.append(li);
  }
}

async function loadModels() {
  try {
    const m = await call("/v1/models", { headers: headers() });
    const kinds = m.data.map((d) => d.id + " (" + d.kind + ")");
    $("status").textContent = kinds.length ? "models: " + kinds.join(", ") : "no models loaded";
    $("search-section").hidden = !m.search;
    $("recommend-section").hidden = !m.recommend;
    $("classify-section").hidden = !m.data.some((d) => d.kind === "image_classifier");
    const chat = m.data.filter((d) => d.kind === "generator").map((d) => d.id);
    $("chat-section").hidden = chat.length === 0;
    $("chat-model").replaceChildren(...chat.map((id) => new Option(id, id)));
    showError(null);
  } catch (e) {
    $("status").textContent = "models unavailable";
    showError(e);
  }
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const k = Number($("search-k").value) || 5;
    const r = await postJson("/v1/search", { query: $("search-query").value, k });
    fill($("search-results"), r.results[0], (h) => [h.text, h.score.toFixed(3)]);
    showError(null);
  } catch (e) {
    showError(e);
  }
});

$("recommend-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const payload = { user: $("recommend-user").value, k: 10 };
    const d = $("recommend-description").value.trim();
    if (d) payload.description = d;
    const r = await postJson("/v1/recommend", payload);
    $("recommend-source").textContent =
      r.source === "model" ? "from the model" :
      r.source === "text" ? "new user: titles closest to the description" : "new user: most popular";
    fill($("recommend-results"), r.items, (i) => [i.title || i.id, i.score.toFixed(3)]);
    showError(null);
  } catch (e) {
    showError(e);
  }
});

$("classify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const form = new FormData();
    form.append("image", $("classify-file").files[0]);
    const r = await call("/v1/classify", { method: "POST", headers: headers(), body: form });
    const scores = Object.entries(r.data[0].scores).sort((a, b) => b[1] - a[1]).slice(0, 5);
    fill($("classify-results"), scores, ([label, p]) => [label, (100 * p).toFixed(1) + "%"]);
    showError(null);
  } catch (e) {
    showError(e);
  }
});


// Chat: the conversation so far, sent whole with each message; the answer streams in
// (server-sent events read from the response body as they arrive).
let conversation = [];

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  div.textContent = text;
  $("chat-log").append(div);
  return div;
}

// Reads `data:` events from a streamed response, calling `onData` with each parsed chunk.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data !== "[DONE]") onData(JSON.parse(data));
    }
  }
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  conversation.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  $("chat-button").disabled = true;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        model: $("chat-model").value,
        messages: conversation,
        max_tokens: Number($("chat-max").value) || 128,
        temperature: 0,
        stream: true,
      }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(response.status + ": " + ((body.error && body.error.message) || response.statusText));
    }
    let answer = "";
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        bubble.textContent = answer;
      }
    });
    conversation.push({ role: "assistant", content: answer });
    bubble.dataset.done = "true";
    showError(null);
  } catch (e) {
    conversation.pop();
    bubble.remove();
    showError(e);
  } finally {
    $("chat-button").disabled = false;
  }
});

$("chat-clear").addEventListener("click", () => {
  conversation = [];
  $("chat-log").replaceChildren();
});

loadModels();
