"""Dependency audit: pip-audit over the installed environment (a CI script: it prints).

Fails (exit 1) when a known vulnerability is reported. When the vulnerability data cannot be
reached (no internet access: every dependency comes back "could not be audited"), it says so
loudly and passes, since nothing was learnt either way; docs/reliability.md records this.
"""

# ruff: noqa: T201
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    done = subprocess.run(
        [str(pip_audit), "--format", "json", "--progress-spinner", "off", "--skip-editable"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(
            f"dependency audit: NOT RUN, pip-audit failed (exit {done.returncode}):\n"
            f"{done.stderr[-2000:]}"
        )
        return 0
    dependencies = report.get("dependencies", [])
    skipped = [dep for dep in dependencies if dep.get("skip_reason")]
    audited = [dep for dep in dependencies if not dep.get("skip_reason")]
    vulnerable = [dep for dep in audited if dep.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
            print(
                f"dependency audit: {dep['name']} {dep.get('version')}: {vuln['id']} "
                f"(fixed in {fixes})"
            )
    if vulnerable:
        return 1
    if not audited:
        print(
            f"dependency audit: NOT RUN, the vulnerability data could not be reached "
            f"({len(skipped)} dependencies could not be audited); run `make audit` "
            "with internet access before a release"
        )
        return 0
    print(
        f"dependency audit: {len(audited)} dependencies audited, no known vulnerabilities"
        + (f" ({len(skipped)} could not be audited)" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
