"""Shared reporting for the interop test scripts (stdlib only).

Each check is a function that raises on failure (`Failed` with a message, or any exception); the
runner runs every check in order, prints one line per check, the details of every failure, and
a closing `NAME: N passed, M failed` line, and writes the counts as JSON to the file named by
--results (read by scripts/interop/run). KeystoneEnv reads the keystone.env that --keystone-env
names, for the suites that run against the keystone flavor.
"""

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
import uuid


class Failed(Exception):
    """A check's assertion failed; the message says what was expected and what came back."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def equal(actual, expected, what):
    if actual != expected:
        raise Failed(f"{what}: expected {expected!r}, got {actual!r}")


def digests(data):
    """(md5 hex, sha512 hex) of bytes."""
    return hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()


def random_data(size):
    """Incompressible bytes; size chosen by the caller to straddle buffer boundaries."""
    return os.urandom(size)


def unique(prefix):
    """A name no earlier run on the same server used."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="glint endpoint, http://127.0.0.1:PORT")
    parser.add_argument("--workdir", required=True, help="a scratch directory for data files")
    parser.add_argument("--results", help="write {passed, failed, failures} as JSON here")
    parser.add_argument("-k", dest="only", help="run only checks whose name contains this")
    parser.add_argument(
        "--token",
        help="glint runs with auth_strategy = token and lists this token: send it, and also run "
        "the checks that a wrong (or missing) token gets a clean 401",
    )
    parser.add_argument(
        "--keystone-env",
        help="glint runs with the keystone flavor against this Keystone (its keystone.env, "
        "written by scripts/keystone start): the clients log in with the fixture users' passwords",
    )
    parser.add_argument(
        "--web-url",
        help="an HTTP server (python3 -m http.server, started by scripts/interop/run) serving "
        "--web-dir, on a port glint's [import_filtering_opts] allowed_ports lists: the "
        "web-download checks import from it",
    )
    parser.add_argument("--web-dir", help="the folder --web-url serves")
    return parser.parse_args()


def web_file(args, data):
    """Puts `data` in the folder the run's HTTP server serves; returns its URL."""
    check(
        args.web_url and args.web_dir,
        "no --web-url/--web-dir: run this suite through scripts/interop/run, which starts the "
        "HTTP server web-download imports from",
    )
    name = f"{uuid.uuid4().hex}.bin"
    with open(os.path.join(args.web_dir, name), "wb") as f:
        f.write(data)
    return f"{args.web_url}/{name}"


class Account:
    """A fixture user of scripts/keystone: its name, password and project (name and id)."""

    def __init__(self, label, user, password, project, project_id):
        self.label, self.user, self.password = label, user, password
        self.project, self.project_id = project, project_id

    def __repr__(self):
        return f"{self.user} ({self.project} {self.project_id})"


class KeystoneEnv:
    """keystone.env (KEY=VALUE lines, # comments; docs/KEYSTONE-TESTING.md) and its accounts:
    `admin` (admin in project admin), `alpha` (alpha-member: member in alpha), `reader`
    (alpha-reader: reader in alpha), `beta` (beta-member: member in beta)."""

    def __init__(self, path):
        self.values = {}
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    self.values[key] = value
        self.auth_url = self.get("KEYSTONE_AUTH_URL")
        self.url = self.get("KEYSTONE_URL")
        self.domain_id = self.get("KEYSTONE_DOMAIN_ID")
        self.region = self.get("KEYSTONE_REGION")
        self.admin = self.account("admin", "ADMIN")
        self.alpha = self.account("alpha-member", "ALPHA_MEMBER")
        self.reader = self.account("alpha-reader", "ALPHA_READER")
        self.beta = self.account("beta-member", "BETA_MEMBER")

    def get(self, key):
        value = self.values.get(key)
        if not value:
            raise Failed(f"keystone.env has no {key}")
        return value

    def account(self, label, prefix):
        return Account(
            label,
            self.get(f"KEYSTONE_{prefix}_USER"),
            self.get(f"KEYSTONE_{prefix}_PASSWORD"),
            self.get(f"KEYSTONE_{prefix}_PROJECT"),
            self.get(f"KEYSTONE_{prefix}_PROJECT_ID"),
        )


def run_checks(suite, checks, args):
    """Runs `checks` (functions) in order; never stops at a failure. Returns the exit code."""
    passed, failures = 0, []
    for fn in checks:
        name = fn.__name__
        if args.only and args.only not in name:
            continue
        started = time.monotonic()
        try:
            fn()
        except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the run
            elapsed = time.monotonic() - started
            failures.append(name)
            print(f"FAIL {suite}.{name} ({elapsed:.1f}s)", flush=True)
            if isinstance(error, Failed):
                detail = str(error)
            else:
                detail = "".join(traceback.format_exception(error)).rstrip()
            for line in detail.splitlines():
                print(f"    {line}", flush=True)
        else:
            passed += 1
            print(f"ok   {suite}.{name} ({time.monotonic() - started:.1f}s)", flush=True)
    print(f"{suite}: {passed} passed, {len(failures)} failed", flush=True)
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"passed": passed, "failed": len(failures), "failures": failures}, f)
    return 1 if failures else 0


def clean_os_environ():
    """The environment without any OS_* variable of the caller's (a stray OS_CLOUD or
    OS_AUTH_URL would send the clients to keystone)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def main_guard(fn):
    try:
        sys.exit(fn())
    except KeyboardInterrupt:
        sys.exit(130)
