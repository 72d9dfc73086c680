// The Ember dashboard's live parts: filter the functions, follow a function's activations
// (Server-Sent Events), invoke it, run the simulator, redrive dead letters. No framework.
"use strict";
const csrf = document.querySelector('meta[name="csrf"]').content;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

const filter = document.getElementById("filter");
if (filter) {
  filter.addEventListener("input", () => {
    const needle = filter.value.toLowerCase();
    for (const row of document.querySelectorAll("#functions tbody tr")) {
      row.hidden = !row.textContent.toLowerCase().includes(needle);
    }
  });
}

const heading = document.getElementById("function-name");
const name = heading ? heading.dataset.name : null;
// A function of another namespace than `default`: its pages say so, its calls are at /fn/NS/NAME.
const namespace = heading ? heading.dataset.namespace || "default" : "default";
const inNamespace = namespace === "default" ? "" : `namespace=${encodeURIComponent(namespace)}`;

if (name) {
  const body = document.querySelector("#activations tbody");
  const source = new EventSource(
    `/ui/functions/${encodeURIComponent(name)}/stream?csrf=${csrf}` +
      (inNamespace ? `&${inNamespace}` : ""),
  );
  source.addEventListener("activation", (event) => {
    const a = JSON.parse(event.data);
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    const row = body.insertRow(0);
    row.className = "fresh activation";
    row.dataset.id = a.id;
    cell(row, a.started_at.slice(0, 23).replace("T", " "));
    cell(row, a.id).className = "id";
    cell(row, "v" + a.version);
    cell(row, a.status, a.status === "success" ? "" : "error");
    cell(row, a.http_status === null ? "" : String(a.http_status));
    cell(row, a.duration_ms.toFixed(1) + " ms");
    cell(row, a.cold ? "cold" : "warm");
    const logs = cell(row, "", "logs");
    const pre = document.createElement("pre");
    pre.textContent = (a.logs || "") + (a.error ? `${a.error.type || ""}: ${a.error.message || ""}` : "");
    logs.append(pre);
    while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
  });
}

const invokeButton = document.getElementById("invoke");
if (invokeButton) {
  invokeButton.addEventListener("click", async () => {
    const result = document.getElementById("invoke-result");
    const method = document.getElementById("invoke-method").value;
    const path = document.getElementById("invoke-path").value.replace(/^\/+/, "");
    const text = document.getElementById("invoke-body").value;
    const call = { method, path, body: method !== "GET" && text.trim() ? text : null };
    invokeButton.disabled = true;
    try {
      // (the dashboard is of another origin than /fn: it makes the call for its page)
      const response = await fetch(
        `/ui/functions/${encodeURIComponent(name)}/invoke` + (inNamespace ? `?${inNamespace}` : ""),
        {
          method: "POST",
          headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
          body: JSON.stringify(call),
        },
      );
      const answer = await response.json();
      if (answer.error) {
        result.textContent = `${answer.error.code}: ${answer.error.message}`;
        result.className = "error";
      } else {
        const id = answer.activation_id;
        result.textContent = `HTTP ${answer.status}${id ? " · activation " + id : ""}\n${answer.body}`;
        result.className = answer.status < 400 ? "" : "error";
      }
    } catch (error) {
      result.textContent = String(error);
      result.className = "error";
    } finally {
      invokeButton.disabled = false;
    }
  });
}

const simulateButton = document.getElementById("simulate");
if (simulateButton) {
  simulateButton.addEventListener("click", async () => {
    const since = document.getElementById("simulate-since").value;
    const target = document.getElementById("simulation");
    target.textContent = "simulating...";
    const response = await fetch(
      `/ui/functions/${encodeURIComponent(name)}/simulation?since=${encodeURIComponent(since)}` +
        (inNamespace ? `&${inNamespace}` : ""),
      { headers: { "X-CSRF-Token": csrf } },
    );
    const text = await response.text();
    if (response.ok) {
      target.innerHTML = text; // (rendered and escaped by the gateway)
    } else {
      target.textContent = text;
    }
  });
}

const traceButton = document.getElementById("simulate-trace");
if (traceButton) {
  traceButton.addEventListener("click", async () => {
    const target = document.getElementById("trace-simulation");
    const query = new URLSearchParams({ trace: document.getElementById("trace").value });
    for (const spec of document.getElementById("trace-policies").value.split(/\s+/)) {
      if (spec) query.append("policy", spec);
    }
    target.textContent = "simulating...";
    traceButton.disabled = true;
    const response = await fetch(`/ui/simulate?${query}`, { headers: { "X-CSRF-Token": csrf } });
    const text = await response.text();
    if (response.ok) {
      target.innerHTML = text; // (rendered and escaped by the gateway)
    } else {
      target.textContent = text;
    }
    traceButton.disabled = false;
  });
}

for (const button of document.querySelectorAll("button.redrive")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    const response = await fetch(`/ui/dlq/${encodeURIComponent(button.dataset.id)}/redrive`, {
      method: "POST",
      headers: { "X-CSRF-Token": csrf },
    });
    const answer = await response.json();
    button.replaceWith(
      document.createTextNode(response.ok ? (answer.redriven.length ? "redriven" : "already redriven")
        : answer.error.message),
    );
  });
}
