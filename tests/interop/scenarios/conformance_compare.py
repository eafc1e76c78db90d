"""Run the official MCP conformance suite (@modelcontextprotocol/conformance, server scenarios)
once straight against server-everything and once through mcpgate's anonymous /open/mcp route, and
compare scenario by scenario. A scenario PASSes here when it has the same outcome both ways (a
scenario that fails against the bare upstream too is reported as "fails in both"); it FAILs when it
passes against the upstream but not through mcpgate. Prefix: conformance/.

Usage: python conformance_compare.py OUTDIR
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CLI = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
OPEN = os.environ["GW_URL"] + "/open/mcp"
UPSTREAM = os.environ["EVERYTHING_UPSTREAM"]
SCENARIO_TIMEOUT = int(os.environ.get("CONFORMANCE_TIMEOUT", "240"))


def run_suite(url: str, outdir: Path) -> dict[str, dict]:
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "console.log", "w") as log:
        try:
            proc = subprocess.run(
                ["node", str(CLI), "server", "--url", url, "-o", str(outdir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=SCENARIO_TIMEOUT,
                cwd=HERE,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    results: dict[str, dict] = {}
    for checks_file in sorted(outdir.glob("server-*/checks.json")):
        name = re.sub(r"^server-(.*)-\d{4}-\d\d-\d\dT.*$", r"\1", checks_file.parent.name)
        checks = json.loads(checks_file.read_text())
        failures = [c for c in checks if c.get("status") == "FAILURE"]
        results[name] = {
            "ok": not failures,
            "why": "; ".join(f"{c.get('id')}: {c.get('errorMessage', '')}" for c in failures)[:600],
        }
    results["__rc__"] = {"ok": rc == 0 or rc == 1, "why": f"exit {rc}"}
    return results


def main() -> int:
    out = Path(sys.argv[1])
    direct = run_suite(UPSTREAM, out / "direct")
    gateway = run_suite(OPEN, out / "gateway")
    direct.pop("__rc__")
    rc = gateway.pop("__rc__")
    if not direct:
        print(f"FAIL conformance/suite: no scenario results against the upstream ({rc['why']}); see {out}/direct/console.log")
        return 1
    both_fail = []
    for name in sorted(direct):
        d = direct[name]
        g = gateway.get(name)
        if g is None:
            print(f"FAIL conformance/{name}: no result through mcpgate (suite {rc['why']}); see {out}/gateway/console.log")
        elif d["ok"] and g["ok"]:
            print(f"PASS conformance/{name} (passes direct and through mcpgate)")
        elif d["ok"] and not g["ok"]:
            print(f"FAIL conformance/{name}: passes against server-everything but fails through mcpgate: {g['why']}")
        elif not d["ok"] and not g["ok"]:
            both_fail.append(name)
            same = "same checks" if d["why"] == g["why"] else f"through mcpgate: {g['why']}"
            print(f"PASS conformance/{name} (fails in both: {d['why'][:200]}; {same[:200]})")
        else:
            print(f"PASS conformance/{name} (fails direct but passes through mcpgate: {d['why'][:200]})")
    print(f"# conformance: {len(direct)} scenarios; failing in both (fixture/upstream limits): {', '.join(both_fail) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
