// The console's page, style sheet and icon (served by `Console`). The script is in ConsoleScript.swift. The page
// has no inline script or style (the Content-Security-Policy allows neither): it only loads /ui/app.css and
// /ui/app.js, which build everything else.

enum ConsoleAssets {
    static let index = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Relay console</title>
<link rel="icon" href="/ui/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="#/events"><img src="/ui/icon.svg" alt="" width="20" height="20"> Relay</a>
  <nav id="nav" hidden>
    <a href="#/events" data-view="events">Events</a>
    <a href="#/dead" data-view="dead">Dead letters</a>
    <a href="#/destinations" data-view="destinations">Destinations</a>
    <a href="#/rates" data-view="rates">Rates</a>
  </nav>
  <span class="spacer"></span>
  <span id="auth-state" class="muted"></span>
  <button id="signout" type="button" hidden>Sign out</button>
</header>
<main id="main"><p class="muted">Loading…</p></main>
<noscript><p>The console needs JavaScript; the admin API (/v1/...) works without it.</p></noscript>
</body>
</html>
"""#

    static let style = #"""
:root {
  --bg: #f6f7f9; --fg: #1d2330; --muted: #667085; --card: #fff; --line: #e1e4ea; --accent: #2456d6;
  --ok: #13795b; --warn: #a15c00; --bad: #b42318; --code: #f1f3f6;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #12151b; --fg: #e6e8ee; --muted: #98a2b3; --card: #1a1e26; --line: #2c323d; --accent: #7aa2ff;
          --ok: #4cc38a; --warn: #f0b45a; --bad: #ff7b72; --code: #222733; }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
header.top { display: flex; align-items: center; gap: 18px; padding: 10px 20px; background: var(--card);
             border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 1; }
.brand { font-weight: 700; font-size: 16px; color: var(--fg); display: inline-flex; align-items: center; gap: 6px; }
nav { display: flex; gap: 4px; }
nav a { padding: 5px 10px; border-radius: 6px; color: var(--fg); }
nav a.current { background: var(--code); font-weight: 600; }
.spacer { flex: 1; }
main { padding: 18px 20px 40px; max-width: 1400px; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 22px 0 8px; }
h3 { font-size: 14px; margin: 0; }
.muted { color: var(--muted); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin: 10px 0; }
.card-head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; margin-bottom: 6px; }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: 6px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
tr:last-child td { border-bottom: 0; }
tbody tr:hover { background: var(--code); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: var(--code); padding: 8px 10px; border-radius: 6px; overflow: auto; max-height: 420px;
      white-space: pre-wrap; word-break: break-all; margin: 6px 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-end; margin-bottom: 12px; }
form.filters label, form.stack label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 3px; }
input, select, button { font: inherit; color: inherit; }
input, select { padding: 5px 7px; border: 1px solid var(--line); border-radius: 6px; background: var(--card); min-width: 120px; }
button { padding: 5px 12px; border: 1px solid var(--line); border-radius: 6px; background: var(--card); cursor: pointer; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.danger { border-color: var(--bad); color: var(--bad); }
button:disabled { opacity: .5; cursor: default; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         background: var(--code); border: 1px solid var(--line); }
.badge.delivered, .badge.closed, .badge.running, .badge.ok { color: var(--ok); border-color: var(--ok); }
.badge.pending, .badge.in_flight, .badge.half-open, .badge.paused, .badge.skipped, .badge.superseded { color: var(--warn); border-color: var(--warn); }
.badge.dead, .badge.open, .badge.bad { color: var(--bad); border-color: var(--bad); }
.pager { display: flex; gap: 10px; margin: 10px 0; align-items: center; }
.signin { max-width: 380px; margin: 60px auto; }
form.stack { display: flex; flex-direction: column; gap: 10px; }
.error { color: var(--bad); min-height: 1.4em; margin: 0; }
.notice { color: var(--ok); min-height: 1.4em; margin: 0; }
ol.timeline { list-style: none; padding: 0; margin: 0; border-left: 2px solid var(--line); }
ol.timeline li { padding: 3px 0 3px 14px; position: relative; }
ol.timeline li::before { content: ""; position: absolute; left: -6px; top: 9px; width: 10px; height: 10px;
                         border-radius: 50%; background: var(--line); }
ol.timeline li.ok::before { background: var(--ok); }
ol.timeline li.bad::before { background: var(--bad); }
ol.timeline li.warn::before { background: var(--warn); }
ol.timeline time { color: var(--muted); margin-right: 8px; font-variant-numeric: tabular-nums; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
details > summary { cursor: pointer; color: var(--accent); }
.rate { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 10px; }
.tiles .card { margin: 0; }
"""#

    static let icon = #"""
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#2456d6"/><path d="M7 16h11m-4-5 5 5-5 5M21 9v14" stroke="#fff" stroke-width="2.6" fill="none" stroke-linecap="round" stroke-linejoin="round"/></svg>
"""#
}
