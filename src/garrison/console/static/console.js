// garrison console: progressive enhancement only. Without this script every page reads and every form
// posts; with it, chat answers stream in as they are generated (SSE over a same-origin fetch).
"use strict";

function appendMessage(list, role, text) {
  const item = document.createElement("li");
  item.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "speaker";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  list.append(item);
  return body;
}

async function streamAnswer(form, event) {
  event.preventDefault();
  const list = document.getElementById("messages");
  const status = document.getElementById("chat-status");
  const button = form.querySelector("button[type=submit]");
  const data = new URLSearchParams(new FormData(form));
  const question = data.get("message") || "";
  if (!question.trim()) return;
  appendMessage(list, "user", question);
  const answer = appendMessage(list, "assistant", "");
  answer.parentElement.setAttribute("aria-busy", "true");
  button.disabled = true;
  status.textContent = "Answering…";
  form.querySelector("textarea").value = "";
  try {
    const response = await fetch(form.action, {
      method: "POST", body: data, credentials: "same-origin", headers: { Accept: "text/event-stream" },
    });
    if (!response.ok || !response.body) {
      let message = "The request failed (" + response.status + ").";
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        handleFrame(frame, answer, status);
      }
    }
  } catch (error) {
    status.textContent = "";
    const alert = document.createElement("p");
    alert.className = "alert";
    alert.setAttribute("role", "alert");
    alert.textContent = error.message;
    answer.parentElement.append(alert);
  } finally {
    answer.parentElement.removeAttribute("aria-busy");
    button.disabled = false;
  }
}

function addConversationLink(url, title) {
  let list = document.querySelector(".conv-list");
  if (!list) {
    list = document.createElement("ul");
    list.className = "conv-list";
    const empty = document.querySelector(".conversations .muted");
    if (empty) empty.replaceWith(list); else document.querySelector(".conversations").append(list);
  }
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = url;
  link.textContent = title;
  link.setAttribute("aria-current", "page");
  item.append(link);
  list.prepend(item);
}

function handleFrame(frame, answer, status) {
  const lines = frame.split("\n");
  const kind = (lines.find((l) => l.startsWith("event: ")) || "event: message").slice(7);
  const payload = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
  if (!payload || payload === "[DONE]") return;
  const message = JSON.parse(payload);
  if (kind === "meta") {
    if (message.new) {
      history.replaceState(null, "", message.url);
      document.getElementById("thread-title").textContent = document.title = message.title;
      addConversationLink(message.url, message.title);
      document.getElementById("chat-form").action = message.url;
      const picker = document.getElementById("model");
      if (picker) picker.closest("form").querySelectorAll("label[for=model], #model").forEach((el) => el.remove());
    }
    answer.parentElement.dataset.requestId = message.request_id;
  } else if (message.delta !== undefined) {
    answer.textContent += message.delta;
  } else if (message.done) {
    status.textContent = "Answered (" + message.usage.completion_tokens + " tokens).";
    answer.parentElement.dataset.done = "true";
    if (message.label) {
      const badge = document.createElement("span");
      badge.className = "badge label-" + message.label;
      badge.textContent = message.label;
      answer.parentElement.append(badge);
    }
    if (message.citations && message.citations.length) {
      const sources = document.createElement("ol");
      sources.className = "citations";
      sources.setAttribute("aria-label", "Sources");
      for (const c of message.citations) {
        const item = document.createElement("li");
        const label = document.createElement("span");
        label.className = "badge label-" + c.label;
        label.textContent = c.label;
        item.append(label, " [" + c.number + "] " + c.title + (c.page ? ", page " + c.page : ""));
        sources.append(item);
      }
      answer.parentElement.append(sources);
    }
  } else if (message.error) {
    status.textContent = "";
    answer.parentElement.dataset.done = "error";
    answer.textContent += "\n[error: " + message.error.message + "]";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("chat-form");
  if (form && window.fetch && window.TextDecoderStream) form.addEventListener("submit", (e) => streamAnswer(form, e));
  for (const field of document.querySelectorAll(".secret-value")) field.addEventListener("focus", () => field.select());
});
