#!/usr/bin/env python3
"""Checks docker-compose.yml without a Docker engine: it parses, names only files that exist,
build targets the Dockerfile defines, services and volumes that are declared; every service has
a health check; only the load balancer publishes a port; every variable it reads is documented in
.env.example; the load balancer's upstream names are services. Then, where the compose tool is
installed, `docker compose config` must accept it too."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


compose_text = (ROOT / "docker-compose.yml").read_text()
compose = yaml.safe_load(compose_text)
services = compose.get("services") or {}
volumes = compose.get("volumes") or {}
check(services, "no services defined")

for name, service in services.items():
    build = service.get("build")
    if build:
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        check(context.is_dir(), f"{name}: build context {context} does not exist")
        check(dockerfile.is_file(), f"{name}: {dockerfile} does not exist")
        target = build.get("target")
        if target and dockerfile.is_file():
            stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.M | re.I)
            check(target in stages, f"{name}: target {target} is not a stage of {dockerfile.name}")
    for volume in service.get("volumes", []):
        source = (volume if isinstance(volume, str) else volume.get("source", "")).split(":")[0]
        if source.startswith((".", "/")):
            check((ROOT / source).exists(), f"{name}: mounted file {source} does not exist")
        else:
            check(source in volumes, f"{name}: volume {source} is not declared")
    depends = service.get("depends_on", {})
    for other in depends if isinstance(depends, (list, dict)) else []:
        check(other in services, f"{name}: depends on undefined service {other}")
    check("healthcheck" in service, f"{name}: no health check")
    if service.get("ports"):
        check(name == "lb", f"{name}: publishes a port (only the load balancer should)")

documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
for variable in sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))):
    check(variable in documented, f"${{{variable}}} is not documented in .env.example")

nginx = (ROOT / "deploy" / "nginx.conf").read_text()
for upstream in re.findall(r"set \$\w+ ([\w-]+):\d+;", nginx):
    check(upstream in services, f"nginx.conf proxies to {upstream}, which is not a service")

# The Redis Cluster override: it parses, overrides only services that exist, adds only services
# with a health check, and depends only on services it or the base defines.
override = yaml.safe_load((ROOT / "deploy" / "cluster.compose.yml").read_text())
for name, service in (override.get("services") or {}).items():
    if name not in services:
        check("healthcheck" in service, f"cluster.compose.yml: {name}: no health check")
    for other in service.get("depends_on", {}):
        known = other in services or other in override["services"]
        check(known, f"cluster.compose.yml: {name}: depends on undefined service {other}")

if errors:
    print("docker-compose.yml:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)

try:
    has_compose = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
except FileNotFoundError:
    has_compose = False
if has_compose:
    subprocess.run(
        ["docker", "compose", "--env-file", ".env.example", "config", "--quiet"], cwd=ROOT, check=True
    )
    subprocess.run(
        ["docker", "compose", "--env-file", ".env.example", "-f", "docker-compose.yml",
         "-f", "deploy/cluster.compose.yml", "config", "--quiet"], cwd=ROOT, check=True
    )
    print("docker-compose.yml: checked, and `docker compose config` accepts it")
else:
    print("docker-compose.yml: checked (the compose tool is not installed here)")
