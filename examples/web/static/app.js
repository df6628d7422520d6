// The page of the power_loop web example. No framework, no build step.
//
// The transcript is the session's committed feed (GET .../feed, an EventSource): every
// message and send status appears once, in commit order, whichever process wrote it.
// A send's live events (POST .../messages, read as a stream) only fill the "streaming"
// draft until the feed has the stored answer. When the server goes away, the
// EventSource reconnects from the last cursor it saw and catches up.
//
// Everything stored is rendered with textContent: a model's or a user's text can never
// become markup, and the Content-Security-Policy forbids inline script anyway.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const transcript = $("transcript");
  const draft = $("draft");
  const statusBadge = $("status");
  let sessionId = null;
  let cursor = null;          // the cursor of the last feed item rendered
  let feed = null;            // the EventSource
  let reopenTimer = null;
  const seen = new Set();     // feed items already rendered (a reconnect never doubles)

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setStatus(state, label) {
    statusBadge.dataset.state = state;
    statusBadge.textContent = label;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function apiUrl(path) {
    return "/api/sessions/" + encodeURIComponent(sessionId) + path;
  }

  // -- the committed feed ---------------------------------------------------------

  function renderMessage(data) {
    const key = "m:" + data.seq;
    if (seen.has(key)) return;
    seen.add(key);
    const item = el("li", "msg " + data.role);
    item.dataset.seq = String(data.seq);
    item.dataset.sendIndex = String(data.send_index);
    item.appendChild(el("div", "role", data.role));
    for (const part of data.parts || []) {
      if (part.kind === "text") {
        item.appendChild(el("div", "text", part.text));
      } else if (part.kind === "tool_call") {
        const call = el("div", "tool-call", "\u2192 " + part.name + "(" + part.arguments + ")");
        call.dataset.callId = part.id;
        item.appendChild(call);
      } else if (part.kind === "tool_result") {
        const result = el("div", "tool-result" + (part.is_error ? " error" : ""),
                          "\u2190 " + part.name + ": " + part.content);
        result.dataset.callId = part.call_id;
        item.appendChild(result);
      }
    }
    transcript.appendChild(item);
    if (data.role === "assistant") resetDraft();
    item.scrollIntoView({ block: "end" });
  }

  function renderSend(data) {
    const edge = data.status === "pending" ? "start" : "end";
    const key = "s:" + data.send_index + ":" + edge;
    if (seen.has(key)) return;
    seen.add(key);
    let label = "send #" + data.send_index + " " + (edge === "start" ? "started" : data.status);
    if (data.source && data.source !== "user") label += " (" + data.source + ")";
    if (edge === "end" && data.stop_reason) label += ": " + data.stop_reason;
    if (data.error && data.error.message) label += ": " + data.error.message;
    const item = el("li", "send", label);
    item.dataset.sendIndex = String(data.send_index);
    item.dataset.status = data.status;
    transcript.appendChild(item);
    refreshWaiting();
  }

  function onFeed(render) {
    return function (event) {
      const data = JSON.parse(event.data);
      render(data);
      cursor = data.cursor;
      transcript.dataset.cursor = cursor;
    };
  }

  function openFeed() {
    clearTimeout(reopenTimer);
    if (feed) feed.close();
    const query = cursor ? "?after=" + encodeURIComponent(cursor) : "";
    feed = new EventSource(apiUrl("/feed") + query);
    feed.addEventListener("open", () => setStatus("live", "live"));
    feed.addEventListener("message", onFeed(renderMessage));
    feed.addEventListener("send", onFeed(renderSend));
    feed.addEventListener("problem", (event) => {
      const problem = JSON.parse(event.data);
      if (problem.code === "invalid_argument" && cursor) {
        // The cursor no longer fits (the session was replaced): render it afresh.
        transcript.replaceChildren();
        seen.clear();
        cursor = null;
        openFeed();
      } else {
        showError(problem.message);
      }
    });
    feed.addEventListener("end", () => feed.close());
    feed.addEventListener("error", () => {
      setStatus("reconnecting", "reconnecting");
      if (feed.readyState === EventSource.CLOSED) {
        // The browser gave up (the server answered with an error): try again ourselves.
        reopenTimer = setTimeout(openFeed, 1000);
      }
      // Otherwise the browser reconnects by itself, sending Last-Event-ID: the cursor.
    });
  }

  // -- what waits on the user -----------------------------------------------------

  let refreshing = null;
  let shownWaits = "[]";      // the waits the list shows now

  function refreshWaiting() {
    // Once per burst: a page catching up reads many send items at once.
    if (!refreshing) {
      refreshing = setTimeout(() => { refreshing = null; loadWaiting(); }, 50);
    }
  }

  async function loadWaiting() {
    if (!sessionId) return;
    let waiting = [];
    try {
      const response = await fetch(apiUrl(""));
      if (!response.ok) return;
      waiting = (await response.json()).waiting.filter((w) => w.status === "waiting");
    } catch (error) {
      return;  // the server is away; the next feed item refreshes this
    }
    const key = JSON.stringify(waiting.map((w) => [w.wait_id, w.status]));
    if (key !== shownWaits) {  // unchanged: keep the list, and what is typed in it
      shownWaits = key;
      const list = $("waits");
      list.replaceChildren();
      for (const wait of waiting) list.appendChild(renderWait(wait));
    }
    $("waiting").hidden = waiting.length === 0;
  }

  function renderWait(wait) {
    const item = el("li", "wait");
    item.dataset.waitId = wait.wait_id;
    if (wait.kind === "input") {
      let question = wait.arguments;
      try { question = JSON.parse(wait.arguments).question; } catch (error) { /* as is */ }
      item.appendChild(el("span", "question", question));
      const input = el("input", "answer-text");
      input.placeholder = "Your answer";
      item.appendChild(input);
      const button = el("button", "answer", "Answer");
      button.type = "button";
      button.dataset.waitId = wait.wait_id;
      button.addEventListener("click", () => decide(wait.wait_id, "answer", { text: input.value }));
      item.appendChild(button);
      return item;
    }
    item.appendChild(el("code", "tool", wait.tool_name + "(" + wait.arguments + ")"));
    if (wait.kind !== "approval") {
      item.appendChild(el("span", "held", "runs once the rest of its round is decided"));
      return item;
    }
    for (const action of ["approve", "reject"]) {
      const button = el("button", action, action === "approve" ? "Approve" : "Reject");
      button.type = "button";
      button.dataset.waitId = wait.wait_id;
      button.addEventListener("click", () => decide(wait.wait_id, action, {}));
      item.appendChild(button);
    }
    return item;
  }

  function decide(waitId, action, body) {
    $("waiting").hidden = true;
    const path = "/waits/" + encodeURIComponent(waitId) + "/" + action;
    return streamPost(path, body);
  }

  // -- a send's live events ----------------------------------------------------------

  function resetDraft() {
    draft.querySelector(".text").textContent = "";
    draft.querySelector(".activity").textContent = "";
  }

  function onLive(event) {
    switch (event.type) {
      case "SendStarted":
        draft.hidden = false;
        resetDraft();
        break;
      case "TextChunk":
        draft.hidden = false;
        draft.querySelector(".text").textContent += event.text;
        break;
      case "ToolCallStarted":
        draft.querySelector(".activity").textContent =
          "running " + event.name + "(" + event.arguments + ")\u2026";
        break;
      case "ToolCallFinished":
        draft.querySelector(".activity").textContent = event.name + " finished";
        break;
      case "SendFinished":
        draft.hidden = true;
        resetDraft();
        refreshWaiting();
        break;
    }
  }

  function onFrame(name, data) {
    if (name === "live") onLive(data);
    else if (name === "problem") showError(data.message);
  }

  async function streamPost(path, body) {
    showError("");
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (error) {
      showError("The server is not answering; the page will catch up when it is back.");
      return;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ message: response.statusText }));
      showError(problem.message);
      refreshWaiting();
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const lines = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) lines.push(line.slice(6));
          }
          if (lines.length) onFrame(name, JSON.parse(lines.join("\n")));
        }
      }
    } catch (error) {
      // The server went away mid-send: a worker finishes it, the feed shows it.
    }
    draft.hidden = true;
    resetDraft();
  }

  function requestKey() {
    // A retried request with the same key is answered once (an idempotent send).
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // -- start-up -----------------------------------------------------------------------

  async function newSession() {
    const response = await fetch("/api/sessions", { method: "POST" });
    const data = await response.json();
    return data.session_id;
  }

  async function start(fresh) {
    sessionId = new URLSearchParams(location.hash.slice(1)).get("session");
    if (!sessionId || fresh) {
      sessionId = await newSession();
      history.replaceState(null, "", "#session=" + encodeURIComponent(sessionId));
    }
    $("session-id").textContent = sessionId;
    transcript.replaceChildren();
    seen.clear();
    cursor = null;
    shownWaits = null;
    openFeed();
    refreshWaiting();
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    streamPost("/messages", { text: text, request_key: requestKey() });
  });
  $("new-session").addEventListener("click", () => start(true));
  start(false).catch((error) => showError(String(error)));
})();
