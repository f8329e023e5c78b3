#!/usr/bin/env python3
"""Tables and a chart from bench/compare.sh's results.jsonl.

    python3 bench/report.py RESULTS.jsonl [--svg CHART.svg] > summary.md

Medians over the rounds, with the spread (min-max) of the ranking figure, messages per server
CPU-second; the ratio column is duplex's median divided by the server's.
"""
import json
import statistics
import sys
from collections import defaultdict

SERVER_ORDER = [
    "duplex", "duplex-chat", "tokio-tungstenite", "fastwebsockets", "node-ws", "tcp", "tokio-floor",
]
COLORS = {
    "duplex": "#2b6cb0",
    "duplex-chat": "#63b3ed",
    "tokio-tungstenite": "#dd6b20",
    "fastwebsockets": "#38a169",
    "node-ws": "#805ad5",
    "tcp": "#718096",
    "tokio-floor": "#a0aec0",
}
SCENARIO_TITLES = {
    "1x20B": "1 connection x 20 B (1 in flight)",
    "100x20B": "100 connections x 20 B (4 in flight each)",
    "10x16KiB": "10 connections x 16 KiB binary (4 in flight each)",
    "1000x1KiB": "1,000 connections x 1 KiB (1 in flight each)",
}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def order(servers):
    return sorted(servers, key=lambda s: SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def echo_tables(rows):
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["scenario"] in SCENARIO_TITLES:
            by[r["scenario"]][r["server"]].append(r)
    summary = {}
    out = []
    for scenario in SCENARIO_TITLES:
        if scenario not in by:
            continue
        servers = by[scenario]
        per_cpu = {s: [r["messages_per_server_cpu_sec"] for r in rs] for s, rs in servers.items()}
        duplex = med(per_cpu.get("duplex", []))
        out.append(f"### {SCENARIO_TITLES[scenario]}\n")
        out.append(
            "| server | msg per server CPU-s, median (min-max) | duplex ratio | msg/s | MB/s "
            "| p50 us | p99 us | p99.9 us | errors | runs |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        summary[scenario] = {}
        for s in order(servers):
            rs = servers[s]
            m = med(per_cpu[s])
            summary[scenario][s] = m
            vals = [v for v in per_cpu[s] if v is not None]
            spread = f"{min(vals):,.0f}-{max(vals):,.0f}" if vals else "-"
            ratio = "" if s == "duplex" or not (duplex and m) else f"{duplex / m:.2f}x"
            out.append(
                f"| {s} | **{fmt(m)}** ({spread}) | {ratio} "
                f"| {fmt(med([r['messages_per_sec'] for r in rs]))} "
                f"| {fmt(med([r['mb_per_sec'] for r in rs]), 1)} "
                f"| {fmt(med([r['latency_us']['p50'] for r in rs]))} "
                f"| {fmt(med([r['latency_us']['p99'] for r in rs]))} "
                f"| {fmt(med([r['latency_us']['p99_9'] for r in rs]))} "
                f"| {sum(r['errors'] + r['connect_errors'] for r in rs)} | {len(rs)} |"
            )
        out.append("")
    return "\n".join(out), summary


def idle_table(rows):
    idle = [r for r in rows if r["scenario"] == "idle"]
    if not idle:
        return "", {}
    out = [
        "### Server memory per idle connection\n",
        "| server | connections open | RSS before | RSS after | per connection |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for r in sorted(idle, key=lambda r: SERVER_ORDER.index(r["server"]) if r["server"] in SERVER_ORDER else 99):
        kib = r["rss_per_connection"] / 1024
        summary[r["server"]] = kib
        out.append(
            f"| {r['server']} | {r['connected']:,} | {r['server_rss_before'] / 2**20:.1f} MiB "
            f"| {r['server_rss_after'] / 2**20:.1f} MiB | **{kib:.2f} KiB** |"
        )
    out.append("")
    return "\n".join(out), summary


def fanout_table(rows):
    fan = [r for r in rows if r["scenario"].startswith("fanout-")]
    if not fan:
        return ""
    out = [
        "### Fan-out: 1 publisher to N subscribers in one room (duplex serve, 64 B text)\n",
        "| subscribers | deliveries/s | deliveries per server CPU-s | p50 us | p99 us | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(fan, key=lambda r: r["connections"]):
        out.append(
            f"| {r['connections']:,} | {fmt(r['messages_per_sec'])} "
            f"| {fmt(r['messages_per_server_cpu_sec'])} | {fmt(r['latency_us']['p50'])} "
            f"| {fmt(r['latency_us']['p99'])} | {r['errors'] + r['connect_errors']} |"
        )
    out.append("")
    return "\n".join(out)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(summary, idle):
    """Small multiples: one horizontal bar panel per scenario (own scale), plus idle memory."""
    panels = [(SCENARIO_TITLES[k], v, "msg per server CPU-s", False) for k, v in summary.items()]
    if idle:
        panels.append(("Memory per idle connection (lower is better)", idle, "KiB", True))
    cols = 2
    pw, ph = 460, 40 + 26 * len(SERVER_ORDER)
    rows = (len(panels) + cols - 1) // cols
    width, height = cols * pw + 20, rows * ph + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="14" y="26" font-size="16" font-weight="bold">Echo servers on 2 cores: '
        f"messages per server CPU-second (higher is better)</text>",
    ]
    for i, (title, values, unit, lower_better) in enumerate(panels):
        x0 = 10 + (i % cols) * pw
        y0 = 50 + (i // cols) * ph
        parts.append(f'<text x="{x0 + 4}" y="{y0 + 14}" font-weight="bold">{esc(title)}</text>')
        vals = {s: v for s, v in values.items() if v}
        if not vals:
            continue
        top = max(vals.values())
        label_w, bar_w = 130, pw - 130 - 90
        for j, s in enumerate(order(vals)):
            v = vals[s]
            y = y0 + 26 + j * 24
            w = max(1, bar_w * v / top)
            parts.append(f'<text x="{x0 + label_w - 6}" y="{y + 13}" text-anchor="end">{esc(s)}</text>')
            parts.append(
                f'<rect x="{x0 + label_w}" y="{y}" width="{w:.1f}" height="18" '
                f'fill="{COLORS.get(s, "#999")}"/>'
            )
            text = f"{v:,.2f} {unit}" if lower_better else f"{v:,.0f}"
            parts.append(f'<text x="{x0 + label_w + w + 4:.1f}" y="{y + 13}">{esc(text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    rows = load(args[0])
    echo, summary = echo_tables(rows)
    idle, idle_summary = idle_table(rows)
    print(echo)
    print(idle)
    print(fanout_table(rows))
    # A run of only the fan-out leaves the chart of the last full run alone.
    if "--svg" in args and (summary or idle_summary):
        with open(args[args.index("--svg") + 1], "w") as f:
            f.write(svg(summary, idle_summary))


if __name__ == "__main__":
    main()
