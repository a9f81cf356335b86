#!/usr/bin/env python3
"""End-to-end lab import benchmark behind scripts/bench-e2e (run that, not this: it sets up
the venv and the binary). See BENCHMARKS.md.

Measures, in one run, on fresh clones of the OSCAR database named by OSCARFLOW_TEST_MYSQL_URL
(default mysql://oscarflow:oscarflow@127.0.0.1:3306/oscarflow_ci) seeded with the synthetic
population of scripts/bench_workload.py:

  1. throughput: the real daemon (`oscarflow run`, folder source -> parse_hl7 -> match_patient
     -> oscar_lab, the files waiting committed together: one durable transaction per group)
     with the whole workload renamed into its inbox as fast as possible: messages / (last commit - first arrival), peak RSS (VmHWM);
  2. offered load: a fresh daemon and database, files renamed in at a fixed rate (1,000 msg/s):
     p50/p99 from arrival (the rename) to commit (the daemon's JSON log line, written after
     the commit, with the content hash);
  3. ceiling: the rows the daemon wrote, dumped and re-inserted with large multi-row INSERTs,
     one transaction per table, into a fresh clone (`mariadb` client reading a dump);
  4. python: scripts/bench_python_import.py (python-hl7 + PyMySQL, one transaction per file)
     on the first files of the same workload.

Every database it creates is named oscarflow_bench_<pid>_* and dropped at the end; every
child process is stopped.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime

import pymysql

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB_TABLES = ["fileUploadCheck", "hl7TextMessage", "hl7TextInfo", "patientLabRouting", "providerLabRouting",
              "measurements", "measurementsExt", "measurementsDeleted", "oscarflow_lab_import"]
DONE_MESSAGES = ("Imported into OSCAR.", "Input already imported; nothing written.", "Message dead-lettered.")


def say(line):
    print(line, flush=True)


class Db:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 3306
        self.user = urllib.parse.unquote(u.username or "")
        self.password = urllib.parse.unquote(u.password or "")
        self.base = u.path.lstrip("/")
        self.created = []

    def url(self, db):
        return (f"mysql://{urllib.parse.quote(self.user)}:{urllib.parse.quote(self.password)}"
                f"@{self.host}:{self.port}/{db}")

    def connect(self, db=None, **kw):
        return pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               database=db, charset="utf8mb4", autocommit=True, **kw)

    def client_args(self):
        return [f"-h{self.host}", f"-P{self.port}", f"-u{self.user}", f"-p{self.password}"]

    def clone(self, src, dst, with_tables_of=None):
        """A fresh database `dst` with every table of `src` (structure and rows), plus the
        structure of `with_tables_of`'s oscarflow_* tables."""
        c = self.connect()
        cur = c.cursor()
        # OSCAR's schema needs these (see ../shared/oscar/load-open-o-bc.sh).
        cur.execute("SET SESSION innodb_strict_mode = 0")
        cur.execute("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        cur.execute("SELECT default_character_set_name, default_collation_name FROM information_schema.schemata "
                    "WHERE schema_name = %s", (src,))
        charset, collation = cur.fetchone()
        cur.execute(f"DROP DATABASE IF EXISTS `{dst}`")
        cur.execute(f"CREATE DATABASE `{dst}` CHARACTER SET {charset} COLLATE {collation}")
        self.created.append(dst)
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                    "AND table_type = 'BASE TABLE'", (src,))
        tables = [r[0] for r in cur.fetchall()]
        cur.execute("SET SESSION foreign_key_checks = 0")
        for t in tables:
            cur.execute(f"CREATE TABLE `{dst}`.`{t}` LIKE `{src}`.`{t}`")
            cur.execute(f"SELECT 1 FROM `{src}`.`{t}` LIMIT 1")
            if cur.fetchone():
                cur.execute(f"INSERT INTO `{dst}`.`{t}` SELECT * FROM `{src}`.`{t}`")
        if with_tables_of:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                        "AND table_name LIKE 'oscarflow\\_%%' AND table_type = 'BASE TABLE'", (with_tables_of,))
            for (t,) in cur.fetchall():
                if t not in tables:
                    cur.execute(f"CREATE TABLE `{dst}`.`{t}` LIKE `{with_tables_of}`.`{t}`")
        c.close()

    def counts(self, db, tables=LAB_TABLES):
        c = self.connect(db)
        cur = c.cursor()
        out = {}
        for t in tables:
            try:
                cur.execute(f"SELECT COUNT(*) FROM `{t}`")
                out[t] = cur.fetchone()[0]
            except pymysql.err.ProgrammingError:
                out[t] = None
        c.close()
        return out

    def drop_all(self):
        if not self.created:
            return
        c = self.connect()
        cur = c.cursor()
        for d in self.created:
            cur.execute(f"DROP DATABASE IF EXISTS `{d}`")
        c.close()
        self.created = []


def load_sql_file(db, name, path):
    subprocess.run(["mariadb", *db.client_args(), "--default-character-set=utf8mb4", name],
                   stdin=open(path, "rb"), check=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    i = min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))
    return v[i]


def parse_ts(s):
    # 2026-11-23T00:35:51.690552Z (tracing's JSON timer: RFC 3339, microseconds)
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".")
        s = head + "." + frac[:6].ljust(6, "0")
    return datetime.fromisoformat(s + "+00:00").timestamp()


PIPELINE = """
[pipeline]
name = "bench"
channel_capacity = 16

[sources.inbox]
type = "folder"
path = "{inbox}"
pattern = "*.hl7"
mode = "watch"
after = "move"
processed_dir = "{processed}"
# The benchmark renames complete files into the inbox (what a careful drop does), so no
# settling delay is needed; the rescan is a safety net behind the file system watch.
min_age = "0s"
poll_interval = "1s"

[stages.parse]
type = "parse_hl7"
inputs = ["inbox"]
message_types = ["ORU"]

[stages.match]
type = "match_patient"
inputs = ["parse"]
nomatch_names = true
relax_sex_for_non_binary = true

[sinks.oscar]
type = "oscar_lab"
inputs = ["match"]
service_name = "oscarflow"
oscar_flavour = "auto"
order_by = "accession"
concurrency = {concurrency}
group_max_files = {group}
"""


def cpu_seconds(pid):
    """User + system CPU seconds of a process (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def server_pid():
    try:
        out = subprocess.run(["pidof", "mariadbd"], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None
    except (OSError, ValueError):
        return None


def sha256_short(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def run_daemon(args, db, dbname, workload, files, work, rate=None, label="throughput"):
    """Runs the daemon on `files` (list of manifest entries) renamed into its inbox, either as
    fast as possible (rate None) or at `rate` messages per second. Returns a result dict."""
    base = os.path.join(work, label)
    shutil.rmtree(base, ignore_errors=True)
    inbox, processed, staging, pdir, state = (os.path.join(base, d) for d in
                                              ("inbox", "processed", "staging", "pipelines", "state"))
    for d in (inbox, processed, staging, pdir, state):
        os.makedirs(d)
    for f in files:
        shutil.copyfile(os.path.join(workload, "files", f["name"]), os.path.join(staging, f["name"]))
        f["sha"] = sha256_short(os.path.join(staging, f["name"]))
    with open(os.path.join(pdir, "bench.toml"), "w") as fp:
        fp.write(PIPELINE.format(inbox=inbox, processed=processed, concurrency=args.concurrency,
                                 group=args.group_max_files))
    port = free_port()
    log_path = os.path.join(base, "daemon.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([args.binary, "run", "--pipelines", pdir, "--database", db.url(dbname),
                             "--state-dir", state, "--listen", f"127.0.0.1:{port}", "--log-json", "true",
                             "--grace-period", "10s"],
                            stdout=subprocess.DEVNULL, stderr=log, cwd=base)
    result = {}
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the daemon did not become ready (see {log_path})")
            time.sleep(0.1)
        arrivals = []
        spid = server_pid()
        server_cpu0 = cpu_seconds(spid) if spid else 0.0
        daemon_cpu0 = cpu_seconds(proc.pid)
        start = time.time()
        sent = 0
        for f in files:
            if rate:
                due = start + sent / rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            os.rename(os.path.join(staging, f["name"]), os.path.join(inbox, f["name"]))
            arrivals.append(time.time())
            sent += f["messages"]
        fed = time.time()
        total_msgs = sum(f["messages"] for f in files)
        timeout = 120 + total_msgs / 20
        deadline = time.time() + timeout
        while len(os.listdir(processed)) < len(files):
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited early (see {log_path})")
            if time.time() > deadline:
                raise RuntimeError(f"not every file was released within {timeout:.0f} s "
                                   f"({len(os.listdir(processed))} of {len(files)}; see {log_path})")
            time.sleep(0.05)
        result["daemon_cpu"] = cpu_seconds(proc.pid) - daemon_cpu0
        result["server_cpu"] = (cpu_seconds(spid) - server_cpu0) if spid else float("nan")
        with open(f"/proc/{proc.pid}/status") as st:
            for line in st:
                if line.startswith("VmHWM:"):
                    result["peak_mb"] = int(line.split()[1]) / 1024
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            with open(os.path.join(base, "metrics.txt"), "w") as fp:
                fp.write(metrics)
            result["stages"] = stage_means(metrics)
        except Exception:  # noqa: BLE001 - metrics are a nicety
            result["stages"] = {}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    # Commit times from the daemon's log: each line is written after its transaction commits.
    done = {}
    dead = 0
    with open(log_path, encoding="utf-8", errors="replace") as fp:
        for line in fp:
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            msg = e.get("message")
            if msg not in DONE_MESSAGES:
                continue
            t = parse_ts(e["timestamp"])
            if msg == DONE_MESSAGES[2]:
                dead += 1
            sha = e.get("sha", "")
            key = "dup" if msg == DONE_MESSAGES[1] else "imp"
            done.setdefault(sha, {"imp": [], "dup": []})[key].append(t)
    # Per content hash: the first file to arrive is imported (its last part's line marks the
    # commit); later files with the same bytes are duplicates, one line each.
    by_sha = {}
    for f, a in zip(files, arrivals):
        by_sha.setdefault(f["sha"], []).append((a, f))
    lat = []
    last_commit = 0.0
    missing = 0
    for sha, entries in by_sha.items():
        ev = done.get(sha, {"imp": [], "dup": []})
        completions = ([max(ev["imp"])] if ev["imp"] else []) + sorted(ev["dup"])
        entries.sort(key=lambda x: x[0])
        for i, (a, f) in enumerate(entries):
            if i >= len(completions):
                missing += 1
                continue
            c = completions[i]
            last_commit = max(last_commit, c)
            lat.extend([(c - a) * 1000] * f["messages"])
    msgs = sum(f["messages"] for f in files)
    wall = last_commit - arrivals[0]
    result.update({
        "messages": msgs, "files": len(files), "wall": wall, "rate": msgs / wall if wall > 0 else 0,
        "feed_s": fed - start, "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat) if lat else 0,
        "dead": dead, "missing": missing, "log": log_path,
    })
    return result


def stage_means(metrics):
    """Mean milliseconds per observation of the daemon's duration histograms/summaries
    (oscarflow_stage_duration_seconds per component, oscarflow_import_duration_seconds)."""
    sums, counts = {}, {}
    for line in metrics.splitlines():
        if not line.startswith("oscarflow_") or "_duration_seconds_" not in line:
            continue
        name, _, val = line.rpartition(" ")
        metric = name.split("_duration_seconds_", 1)[0][len("oscarflow_"):]
        comp = metric
        if "component=\"" in name:
            comp += ":" + name.split("component=\"", 1)[1].split("\"", 1)[0]
        if "_duration_seconds_sum" in name:
            sums[comp] = sums.get(comp, 0) + float(val)
        elif "_duration_seconds_count" in name:
            counts[comp] = counts.get(comp, 0) + float(val)
    return {c: (sums[c] / counts[c] * 1000, counts[c]) for c in sums if counts.get(c)}


def ceiling(db, run_db, ceil_db, base_db, work, messages):
    """Re-inserts the rows the daemon wrote with large multi-row INSERTs, one transaction per
    table, into a fresh clone; returns (msg/s, seconds, rows)."""
    db.clone(base_db, ceil_db, with_tables_of=run_db)
    dump = os.path.join(work, "ceiling.sql")
    rows = db.counts(run_db)
    with open(dump, "wb") as out:
        out.write(b"SET autocommit = 0;\n")
        for t in LAB_TABLES:
            if not rows.get(t):
                continue
            subprocess.run(["mariadb-dump", *db.client_args(), "--no-create-info", "--skip-triggers", "--compact",
                            "--extended-insert", "--net-buffer-length=4194304", "--skip-disable-keys",
                            "--skip-add-locks", "--single-transaction", "--default-character-set=utf8mb4",
                            run_db, t], stdout=out, check=True)
            out.write(b"\nCOMMIT;\n")
    size = os.path.getsize(dump)
    t0 = time.perf_counter()
    load_sql_file(db, ceil_db, dump)
    secs = time.perf_counter() - t0
    got = db.counts(ceil_db)
    if any((got.get(t) or 0) != (rows.get(t) or 0) for t in LAB_TABLES):
        raise RuntimeError(f"ceiling load incomplete: {got} vs {rows}")
    return messages / secs, secs, sum(v or 0 for v in rows.values()), size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--messages", type=int)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--providers", type=int, default=500)
    ap.add_argument("--offered-rate", type=float, default=1000.0)
    ap.add_argument("--offered-messages", type=int)
    ap.add_argument("--python-messages", type=int)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--group-max-files", type=int, default=64,
                    help="the sink's group_max_files (1: one transaction per file)")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--keep", action="store_true", help="keep the databases (debugging)")
    ap.add_argument("--md5-index", action="store_true",
                    help="add the index on fileUploadCheck(md5sum) the README recommends "
                         "(OSCAR ships none; every new file's duplicate check scans the table)")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the daemon's throughput run (tuning); no e2e line")
    a = ap.parse_args()
    n = a.messages or (5_000 if a.quick else 50_000)
    offered = a.offered_messages or (3_000 if a.quick else 20_000)
    py_n = a.python_messages or (1_000 if a.quick else 5_000)
    url = os.environ.get("OSCARFLOW_TEST_MYSQL_URL", "mysql://oscarflow:oscarflow@127.0.0.1:3306/oscarflow_ci")
    db = Db(url)
    work = os.path.join(os.environ.get("BENCH_WORK", os.path.join(REPO, "target", "bench-e2e")))
    os.makedirs(work, exist_ok=True)

    wl = os.path.join(work, f"workload-{n}-{a.patients}-{a.providers}-{a.seed}")
    if not os.path.exists(os.path.join(wl, "manifest.json")):
        shutil.rmtree(wl, ignore_errors=True)
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bench_workload.py"), "--messages", str(n),
                        "--patients", str(a.patients), "--providers", str(a.providers), "--seed", str(a.seed),
                        "--out", wl], check=True)
    with open(os.path.join(wl, "manifest.json")) as fp:
        manifest = json.load(fp)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(manifest["kinds"].items()))
    total_bytes = sum(f["bytes"] for f in manifest["files"])
    say(f"workload: {manifest['messages']} messages in {len(manifest['files'])} files "
        f"({total_bytes / 1e6:.1f} MB; {kinds}); {a.patients} patients, {a.providers} providers")

    c = db.connect(db.base)
    cur = c.cursor()
    cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@version, @@innodb_buffer_pool_size, @@log_bin, "
                "@@sync_binlog")
    flush, version, pool, log_bin, sync_binlog = cur.fetchone()
    c.close()
    durable = "durable" if int(flush) == 1 else "NOT durable"
    say(f"server: MariaDB {version}, innodb_flush_log_at_trx_commit={flush} ({durable} commits), "
        f"binlog {'on, sync_binlog=' + str(sync_binlog) if int(log_bin) else 'off'}, "
        f"buffer pool {int(pool) >> 20} MiB; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    tag = f"oscarflow_bench_{os.getpid()}"
    base_db = f"{tag}_base"
    try:
        t0 = time.perf_counter()
        db.clone(db.base, base_db)
        load_sql_file(db, base_db, os.path.join(wl, "seed.sql"))
        if a.md5_index:
            c = db.connect(base_db)
            c.cursor().execute("CREATE INDEX oscarflow_md5sum ON fileUploadCheck (md5sum)")
            c.close()
        say(f"setup: {base_db} = {db.base} + {a.patients} demographics and {a.providers} providers "
            f"in {time.perf_counter() - t0:.1f} s; fileUploadCheck "
            f"{'with the recommended md5sum index' if a.md5_index else 'as OSCAR ships it (no md5sum index)'}")

        # 1. Throughput.
        run_db = f"{tag}_run"
        db.clone(base_db, run_db)
        files = [dict(f) for f in manifest["files"]]
        r = run_daemon(a, db, run_db, wl, files, work, label="throughput")
        rows = db.counts(run_db)
        say(f"oscarflow throughput: {r['messages']} messages in {r['wall']:.2f} s = {r['rate']:.0f} msg/s "
            f"(files renamed in over {r['feed_s']:.2f} s), arrival->commit p50 {r['p50']:.0f} ms "
            f"p99 {r['p99']:.0f} ms (saturated), peak RSS {r['peak_mb']:.1f} MB, "
            f"dead letters {r['dead']}, unaccounted {r['missing']}")
        say("oscarflow rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
        say(f"oscarflow cpu: daemon {r['daemon_cpu']:.1f} s, MariaDB server {r['server_cpu']:.1f} s "
            f"over {r['wall']:.1f} s on {os.cpu_count()} CPUs "
            f"({r['daemon_cpu'] / r['messages'] * 1000:.2f} + {r['server_cpu'] / r['messages'] * 1000:.2f} ms per message)")
        if r["stages"]:
            say("oscarflow stage means: " + ", ".join(f"{k} {v[0]:.2f} ms x {v[1]:.0f}"
                                                       for k, v in sorted(r["stages"].items())))
        if r["missing"]:
            raise RuntimeError(f"{r['missing']} files have no commit line in {r['log']}")

        if a.throughput_only:
            return
        # 2. Offered load.
        load_db = f"{tag}_load"
        db.clone(base_db, load_db)
        files2, m = [], 0
        for f in manifest["files"]:
            if m >= offered:
                break
            files2.append(dict(f))
            m += f["messages"]
        o = run_daemon(a, db, load_db, wl, files2, work, rate=a.offered_rate, label="offered")
        say(f"oscarflow offered load: {o['messages']} messages at {a.offered_rate:.0f} msg/s offered "
            f"({o['messages'] / o['feed_s']:.0f} achieved by the feeder), committed at {o['rate']:.0f} msg/s, "
            f"arrival->commit p50 {o['p50']:.1f} ms p99 {o['p99']:.1f} ms max {o['max']:.0f} ms, "
            f"peak RSS {o['peak_mb']:.1f} MB")
        if not a.keep:
            db.created.remove(load_db)
            c = db.connect()
            c.cursor().execute(f"DROP DATABASE `{load_db}`")
            c.close()
        # Below capacity: at half and at 80 % of the measured throughput the p99 measures the
        # path (above capacity the queue grows for as long as the load lasts, so the p99 of
        # the offered run above measures the backlog).
        below = {}
        for share in (0.5, 0.8):
            rate = max(1.0, round(r["rate"] * share))
            if rate >= a.offered_rate:
                continue
            part_db = f"{tag}_load{int(share * 100)}"
            db.clone(base_db, part_db)
            files3, m = [], 0
            for f in manifest["files"]:
                if m >= min(offered, rate * (15 if a.quick else 60)):
                    break
                files3.append(dict(f))
                m += f["messages"]
            h = run_daemon(a, db, part_db, wl, files3, work, rate=rate, label=f"offered-{int(share * 100)}")
            below[share] = h
            say(f"oscarflow offered load at {share:.0%} of its throughput: {h['messages']} messages at "
                f"{rate:.0f} msg/s, arrival->commit p50 {h['p50']:.1f} ms p99 {h['p99']:.1f} ms "
                f"max {h['max']:.0f} ms, dead letters {h['dead']}, unaccounted {h['missing']}")
            if not a.keep:
                db.created.remove(part_db)
                c = db.connect()
                c.cursor().execute(f"DROP DATABASE `{part_db}`")
                c.close()

        # 3. Ceiling.
        ceil_db = f"{tag}_ceil"
        crate, csecs, crows, csize = ceiling(db, run_db, ceil_db, base_db, work, r["messages"])
        say(f"ceiling (multi-row INSERTs, one transaction per table): {crows} rows "
            f"({csize / 1e6:.0f} MB of SQL) in {csecs:.2f} s = {crate:.0f} msg/s")

        # 4. Python importer.
        py_db = f"{tag}_py"
        db.clone(base_db, py_db)
        pyfiles, m = [], 0
        for f in manifest["files"]:
            if m >= py_n:
                break
            pyfiles.append(os.path.join(wl, "files", f["name"]))
            m += f["messages"]
        lst = os.path.join(work, "python-files.txt")
        with open(lst, "w") as fp:
            fp.write("\n".join(pyfiles) + "\n")
        out = subprocess.run([a.python, os.path.join(REPO, "scripts", "bench_python_import.py"), db.url(py_db), lst],
                             check=True, capture_output=True, text=True).stdout
        sys.stdout.write(out)
        py = dict(kv.split("=", 1) for kv in out.strip().splitlines()[-1].split() if "=" in kv)
        prate = float(py["msg_per_s"])
        prows = db.counts(py_db)
        say("python rows: " + ", ".join(f"{k} {v}" for k, v in prows.items()))
        say(f"python importer: {py['messages']} messages in {float(py['seconds']):.2f} s = {prate:.1f} msg/s")

        p99s = "".join(f", p99 at {s:.0%} {h['p99']:.0f} ms" for s, h in sorted(below.items()))
        say(f"e2e: {r['rate']:.0f} msg/s, {r['rate'] / crate:.2f} of ceiling, {r['rate'] / prate:.1f}x python, "
            f"p99 {o['p99']:.0f} ms{p99s}, peak {max(r['peak_mb'], o['peak_mb']):.0f} MB")
    finally:
        if not a.keep:
            db.drop_all()


if __name__ == "__main__":
    main()
