#include "actors/api/status_page.h"

#include <sstream>
#include <vector>

namespace sepal::api {

using nlohmann::json;

namespace {

constexpr const char* kPage = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sepal swarm status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #f7f8fa; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  h2 { font-size: 15px; margin: 22px 0 8px; }
  .muted { color: #6b7385; }
  .cards { display: flex; gap: 12px; flex-wrap: wrap; }
  .card { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 8px 12px; min-width: 110px; }
  .card b { display: block; font-size: 18px; }
  .map { display: grid; gap: 3px; align-items: center; }
  .cell { height: 22px; border-radius: 3px; background: #e8ebf0; }
  .cell.on { background: #3f7be0; }
  .cell.moving { background: repeating-linear-gradient(45deg, #3f7be0, #3f7be0 4px, #9bbcf2 4px, #9bbcf2 8px); }
  .cell.rep { background: none; text-align: center; font-size: 12px; color: #1d2330; }
  .cell.rep.zero { color: #c0392b; font-weight: bold; }
  .label { white-space: nowrap; padding-right: 8px; }
  table { border-collapse: collapse; background: #fff; }
  th, td { border: 1px solid #dde1e8; padding: 4px 10px; text-align: right; }
  th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; }
  #events li { font-family: ui-monospace, monospace; font-size: 12px; }
  #events li.failure { color: #c0392b; }
</style>
</head>
<body>
<h1>sepal: <span id="model">…</span></h1>
<div class="muted"><span id="mode"></span> · up <span id="uptime"></span> · updated <span id="updated">never</span>
  <span id="problem"></span></div>
<h2>API</h2>
<div class="cards" id="api"></div>
<h2>Block map</h2>
<div class="map" id="map"><span class="muted">no swarm: the blocks run in this process</span></div>
<h2>Hosts</h2>
<table id="hosts"><thead><tr><th>host</th><th>assigned</th><th>serving</th><th>tokens/s per block</th>
  <th>sessions</th><th>cache free</th><th>numerics</th></tr></thead><tbody></tbody></table>
<h2>Recent changes</h2>
<ol id="events" reversed></ol>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const mb = (b) => (b / 1e6).toFixed(1) + " MB";
function duration(s) { s = Math.floor(s); return s < 120 ? s + " s" : s < 7200 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h"; }
function render(st) {
  $("model").textContent = st.model;
  $("mode").textContent = st.mode === "swarm" ? "a swarm" : "blocks in this process";
  $("uptime").textContent = duration(st.uptime_s);
  $("updated").textContent = new Date().toLocaleTimeString();
  $("problem").textContent = "";
  const api = $("api"); api.replaceChildren();
  for (const [k, v] of Object.entries(st.api)) { const c = el("div", "card"); c.append(el("b", "", String(v)), el("span", "muted", k.replace(/_/g, " "))); api.append(c); }
  const swarm = st.swarm;
  if (!swarm || !swarm.block_map) return;
  const m = swarm.block_map, n = m.num_blocks;
  const map = $("map"); map.replaceChildren();
  map.style.gridTemplateColumns = "max-content repeat(" + n + ", minmax(18px, 1fr))";
  map.dataset.version = m.version;
  const replicas = new Array(n).fill(0);
  map.append(el("span", "label muted", "block"));
  for (let b = 0; b < n; b++) map.append(el("span", "cell rep", String(b)));
  for (const h of m.hosts) {
    const label = el("span", "label", "host " + h.peer + ": blocks [" + h.first + ", " + h.last + ")");
    label.id = "host-" + h.peer;
    map.append(label);
    for (let b = 0; b < n; b++) {
      const serving = b >= h.serving_first && b < h.serving_last, assigned = b >= h.first && b < h.last;
      if (serving) replicas[b]++;
      map.append(el("span", "cell" + (serving && assigned ? " on" : assigned ? " moving" : "")));
    }
  }
  map.append(el("span", "label muted", "replicas"));
  for (let b = 0; b < n; b++) map.append(el("span", "cell rep" + (replicas[b] ? "" : " zero"), String(replicas[b])));
  const body = $("hosts").tBodies[0]; body.replaceChildren();
  for (const h of m.hosts) {
    const tr = el("tr");
    for (const v of ["host " + h.peer, "[" + h.first + ", " + h.last + ")", "[" + h.serving_first + ", " + h.serving_last + ")",
                     h.throughput.toFixed(0), h.sessions, mb(h.cache_bytes_free), h.numerics || ""]) tr.append(el("td", "", String(v)));
    body.append(tr);
  }
  const events = $("events"); events.replaceChildren();
  for (const e of swarm.events.slice().reverse()) {
    events.append(el("li", e.event.startsWith("failure") ? "failure" : "", new Date(e.time * 1000).toLocaleTimeString() + "  v" + e.version + "  " + e.event));
  }
}
async function poll() {
  try {
    const r = await fetch("/status", { cache: "no-store" });
    render(await r.json());
  } catch (e) {
    $("problem").textContent = "· the server does not answer (" + e + ")";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
)HTML";

// A label value in Prometheus' text format: backslash, double quote and newline escaped.
std::string label_value(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void metric(std::ostringstream& out, const std::string& name, const char* type, const char* help,
            const std::vector<std::pair<std::string, double>>& samples) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  for (const auto& [labels, value] : samples) out << name << labels << ' ' << value << '\n';
}

}  // namespace

const std::string& status_page_html() {
  static const std::string page = kPage;
  return page;
}

std::string prometheus_metrics(const json& status) {
  std::ostringstream out;
  out.precision(17);
  const json& api = status.at("api");
  const auto counter = [&](const char* key, const char* help) {
    metric(out, std::string("sepal_api_") + key + "_total", "counter", help, {{"", api.at(key).get<double>()}});
  };
  const auto gauge = [&](const char* key, const char* help) {
    metric(out, std::string("sepal_api_") + key, "gauge", help, {{"", api.at(key).get<double>()}});
  };
  counter("requests", "Requests received.");
  counter("errors", "Requests answered with an error.");
  counter("rejected", "Requests turned away at the admission limit (HTTP 429).");
  counter("disconnects", "Streams whose client left before the end.");
  counter("prompt_tokens", "Prompt tokens of completed requests.");
  counter("completion_tokens", "Tokens generated for completed requests.");
  gauge("running", "Generations running now.");
  gauge("waiting", "Requests waiting for a turn.");
  metric(out, "sepal_uptime_seconds", "gauge", "Seconds since the server started.", {{"", status.at("uptime_s").get<double>()}});
  const json& swarm = status.at("swarm");
  if (swarm.is_null() || !swarm.contains("block_map") || swarm["block_map"].is_null()) return out.str();
  const json& map = swarm["block_map"];
  const auto n = map.at("num_blocks").get<std::int64_t>();
  metric(out, "sepal_swarm_blocks", "gauge", "Blocks of the model.", {{"", static_cast<double>(n)}});
  metric(out, "sepal_swarm_hosts", "gauge", "Hosts in the block map.", {{"", static_cast<double>(map.at("hosts").size())}});
  metric(out, "sepal_swarm_block_map_version", "gauge", "Version of the block map (grows with every change).",
         {{"", map.at("version").get<double>()}});
  std::vector<std::pair<std::string, double>> first, last, serving, throughput, sessions, cache, numerics;
  std::vector<double> replicas(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)), 0.0);
  for (const json& h : map.at("hosts")) {
    const std::string label = "{peer=\"" + std::to_string(h.at("peer").get<std::int64_t>()) + "\"}";
    const auto sf = h.at("serving_first").get<std::int64_t>(), sl = h.at("serving_last").get<std::int64_t>();
    first.emplace_back(label, h.at("first").get<double>());
    last.emplace_back(label, h.at("last").get<double>());
    serving.emplace_back(label, static_cast<double>(sl - sf));
    throughput.emplace_back(label, h.at("throughput").get<double>());
    sessions.emplace_back(label, h.at("sessions").get<double>());
    cache.emplace_back(label, h.at("cache_bytes_free").get<double>());
    if (h.contains("numerics")) {
      numerics.emplace_back("{peer=\"" + std::to_string(h.at("peer").get<std::int64_t>()) + "\",numerics=\"" +
                                label_value(h.at("numerics").get<std::string>()) + "\"}",
                            1.0);
    }
    for (std::int64_t b = std::max<std::int64_t>(sf, 0); b < std::min(sl, n); ++b) replicas[static_cast<std::size_t>(b)] += 1;
  }
  metric(out, "sepal_host_assigned_first_block", "gauge", "First block the balancer assigned to the host.", first);
  metric(out, "sepal_host_assigned_last_block", "gauge", "One past the last block assigned to the host.", last);
  metric(out, "sepal_host_serving_blocks", "gauge", "Blocks the host serves now.", serving);
  metric(out, "sepal_host_throughput_tokens_per_second", "gauge", "Measured tokens/s through one of the host's blocks.", throughput);
  metric(out, "sepal_host_sessions", "gauge", "Inference sessions open on the host.", sessions);
  metric(out, "sepal_host_cache_bytes_free", "gauge", "Bytes of the host's cache budget still free.", cache);
  metric(out, "sepal_host_numerics", "gauge",
         "1 for each host, labelled with what decides its bits besides the model (weights, caches, kernels).", numerics);
  std::vector<std::pair<std::string, double>> per_block;
  for (std::size_t b = 0; b < replicas.size(); ++b) per_block.emplace_back("{block=\"" + std::to_string(b) + "\"}", replicas[b]);
  metric(out, "sepal_block_replicas", "gauge", "Hosts serving the block now.", per_block);
  return out.str();
}

}  // namespace sepal::api
