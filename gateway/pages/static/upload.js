// The upload page without page reloads: one XHR per file (real upload progress through
// xhr.upload.onprogress), then the job's JSON is polled for analysis and import progress.
// Without JavaScript the same form posts normally and the job page refreshes itself.
(function () {
  "use strict";
  const RUNNING = ["analyzing", "queued", "importing"];
  const form = document.getElementById("upload-form");
  const zone = document.getElementById("dropzone");
  const panel = document.getElementById("progress");

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pollJob(url, onUpdate) {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((r) => r.json())
      .then((job) => {
        onUpdate(job);
        if (RUNNING.includes(job.state)) setTimeout(() => pollJob(url, onUpdate), 700);
      })
      .catch(() => setTimeout(() => pollJob(url, onUpdate), 2000));
  }

  function showJob(row, job) {
    const status = row.querySelector(".status");
    // A second bar for the job: the upload bar stays full, so progress never runs backwards.
    const bar = row.querySelector("progress.job");
    bar.hidden = !RUNNING.includes(job.state);
    bar.value = job.progress;
    status.textContent = "";
    if (RUNNING.includes(job.state)) {
      status.textContent = job.state + (job.rows_done ? " — " + job.rows_done + " rows" : "");
    } else if (job.state === "ready") {
      status.append(el("a", { href: job.page }, "Review the columns and import"));
    } else if (job.state === "done") {
      status.append("Imported " + job.result.rows + " rows: ");
      status.append(el("a", { href: job.result.table_url }, job.result.table));
    } else if (job.state === "failed") {
      status.append(el("span", { class: "error", role: "alert" }, job.error));
    }
  }

  function send(file) {
    panel.hidden = false;
    // The list below is rendered with the page: it must not say "No uploads yet" meanwhile.
    const empty = document.querySelector("#jobs tr.empty td");
    if (empty) empty.textContent = "Your uploads are listed above while they run; reload to see them here.";
    const row = el("div", { class: "upload-row" });
    row.append(el("strong", {}, file.name + " "));
    row.append(el("progress", { class: "upload", max: "1", value: "0", "aria-label": "Upload of " + file.name }), " ");
    row.append(el("progress", { class: "job", max: "1", value: "0", hidden: "", "aria-label": "Import of " + file.name }), " ");
    row.append(el("span", { class: "status" }, "uploading"));
    panel.append(row);
    const data = new FormData();
    ["encoding", "delimiter", "table", "mode"].forEach((name) => {
      if (form.elements[name]) data.append(name, form.elements[name].value);
    });
    data.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) row.querySelector("progress.upload").value = e.loaded / e.total;
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = { detail: xhr.statusText }; }
      if (xhr.status >= 400) {
        row.querySelector(".status").replaceChildren(el("span", { class: "error", role: "alert" }, body.detail || "Upload failed"));
        return;
      }
      row.querySelector("progress.upload").value = 1;
      const job = body.jobs[0];
      pollJob(job.url.replace(/^https?:\/\/[^/]+/, ""), (j) => showJob(row, j));
    };
    xhr.onerror = () => { row.querySelector(".status").textContent = "The connection failed."; };
    xhr.send(data);
  }

  if (form && zone) {
    form.addEventListener("submit", (e) => {
      const files = form.elements.file.files;
      if (!files.length) return;
      e.preventDefault();
      Array.from(files).forEach(send);
      form.reset();
    });
    ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
    zone.addEventListener("drop", (e) => Array.from(e.dataTransfer.files).forEach(send));
  }

  // On a job page, follow a running job and reload once it changes state.
  const jobCard = document.getElementById("job");
  if (jobCard && RUNNING.includes(jobCard.dataset.state)) {
    pollJob(location.pathname + ".json", (job) => {
      const bar = jobCard.querySelector("progress");
      if (bar) bar.value = job.progress;
      const rows = jobCard.querySelector(".rows");
      if (rows) rows.textContent = job.rows_done + " rows" + (job.rows_total ? " of " + job.rows_total : "");
      if (job.state !== jobCard.dataset.state) location.reload();
    });
  }
})();
