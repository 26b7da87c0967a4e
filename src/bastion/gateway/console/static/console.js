// The live calls table: a server-sent event stream of call records, merged per call, filtered and pausable.
"use strict";

(function () {
  const table = document.getElementById("live-calls");
  if (!table) return;
  const body = table.querySelector("tbody");
  const filters = document.getElementById("call-filters");
  const pause = document.getElementById("pause");
  const state = document.getElementById("stream-state");
  const calls = new Map();
  let paused = false;
  let waiting = [];

  function text(tag, value, cls) {
    const cell = document.createElement(tag);
    cell.textContent = value == null ? "" : String(value);
    if (cls) cell.className = cls;
    return cell;
  }

  function decisionOf(call) {
    if (call.held && call.allow !== true) return "held";
    if (call.allow === false) return "deny";
    return call.allow === true ? "allow" : "";
  }

  function render(call) {
    let row = call.row;
    const fresh = !row;
    if (fresh) {
      row = document.createElement("tr");
      call.row = row;
    }
    row.replaceChildren();
    row.dataset.tool = call.tool || "";
    row.dataset.agent = call.agent_id || "";
    row.dataset.decision = decisionOf(call);
    row.dataset.reasons = (call.reasons || []).join("; ");
    row.dataset.callId = call.call_id;
    row.appendChild(text("td", (call.timestamp || "").replace("T", " ").slice(0, 19)));
    row.appendChild(text("td", call.tool));
    row.appendChild(text("td", call.agent_id));
    row.appendChild(text("td", row.dataset.decision, "decision-" + row.dataset.decision));
    row.appendChild(text("td", row.dataset.reasons));
    row.appendChild(text("td", call.risk == null ? "" : call.risk.toFixed(2)));
    row.appendChild(text("td", call.detector || ""));
    row.appendChild(text("td", call.result || ""));
    const story = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/console/calls/" + encodeURIComponent(call.call_id);
    link.textContent = "story";
    story.appendChild(link);
    row.appendChild(story);
    if (fresh) body.prepend(row);
    applyFilter(row);
  }

  function merge(event) {
    if (!event.call_id) return;
    const call = calls.get(event.call_id) || { call_id: event.call_id, reasons: [] };
    calls.set(event.call_id, call);
    call.tool = event.tool || call.tool;
    call.agent_id = event.agent_id || call.agent_id;
    call.timestamp = call.timestamp || event.timestamp;
    if (event.risk != null) call.risk = event.risk;
    if (event.kind === "decision") {
      call.allow = event.allow;
      call.reasons = event.reasons;
    } else if (event.kind === "held") {
      call.held = true;
      call.reasons = event.reasons.length ? event.reasons : call.reasons;
    } else if (event.kind === "result") {
      call.result = event.error ? "error: " + event.error : "exit " + event.exit_code;
    } else if (event.kind === "detection") {
      const why = (event.reasons || []).join("; ");
      call.detector = (event.action || "flagged") + (event.applied === false ? " (not applied)" : "") +
        (why ? ": " + why : "");
    } else if (event.kind === "revocation") {
      call.result = (call.result ? call.result + "; " : "") + "revoked: " + (event.reasons || []).join("; ");
    }
    render(call);
  }

  function applyFilter(row) {
    const wanted = new FormData(filters);
    const tool = String(wanted.get("tool") || "").trim();
    const agent = String(wanted.get("agent") || "").trim();
    const decision = String(wanted.get("decision") || "");
    const words = String(wanted.get("text") || "").trim().toLowerCase();
    row.hidden = (tool && !row.dataset.tool.includes(tool)) || (agent && !row.dataset.agent.includes(agent)) ||
      (decision && row.dataset.decision !== decision) || (words && !row.dataset.reasons.toLowerCase().includes(words));
  }

  filters.addEventListener("input", function () { body.querySelectorAll("tr").forEach(applyFilter); });
  filters.addEventListener("submit", function (event) { event.preventDefault(); });
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      waiting.forEach(merge);
      waiting = [];
    }
    state.textContent = paused ? "paused" : "live";
  });

  const stream = new EventSource(table.dataset.stream);
  stream.addEventListener("open", function () { state.textContent = paused ? "paused" : "live"; });
  stream.addEventListener("error", function () { if (!paused) state.textContent = "reconnecting…"; });
  stream.addEventListener("call", function (message) {
    const event = JSON.parse(message.data);
    if (paused) {
      waiting.push(event);
      state.textContent = "paused (" + waiting.length + " waiting)";
    } else {
      merge(event);
    }
  });
})();

// A live refresh never replaces a part of the page someone is typing in or using.
document.addEventListener("htmx:beforeRequest", function (event) {
  const active = document.activeElement;
  const elt = event.detail.elt;
  if (active && active !== document.body && active !== elt && elt.contains(active)) event.preventDefault();
});
