#!/usr/bin/env python3
"""Python peer for scripts/bench-e2e: a straightforward lab importer of the kind a Python
integration service would run (python-hl7 + PyMySQL), doing OSCAR's writes per file:
fileUploadCheck (MD5 duplicate check), then per message hl7TextMessage (Base64 body),
hl7TextInfo, the patient match on health number + birth date + sex (exactly one row, merged
charts followed to their head), for a matched patient the previous version's measurements moved
to measurementsDeleted and one measurements row (+ measurementsExt key/values) per result,
patientLabRouting, and providerLabRouting (practitioner numbers, else the MRP, else '0', plus
forwarding rules). One transaction per file, committed durably by the server. Not optimised,
but the same rows.

    bench_python_import.py MYSQL_URL FILE_LIST

prints `impl=python-import messages=<n> files=<f> seconds=<s> msg_per_s=<r>`.
"""
import base64
import hashlib
import os
import sys
import time
import urllib.parse
from datetime import datetime

import hl7
import pymysql


def get(seg, field, rep=1, comp=1):
    try:
        return str(seg.extract_field(1, field, rep, comp) or "").strip()
    except (IndexError, KeyError):
        return ""


def reps(seg, field):
    out = []
    for r in range(1, 50):
        try:
            seg.extract_field(1, field, r, 1)
        except (IndexError, KeyError):
            break
        out.append(r)
    return out


def hl7_date(s):
    s = (s or "").strip()
    for fmt, n in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12), ("%Y%m%d", 8)):
        if len(s) >= n:
            try:
                return datetime.strptime(s[:n], fmt).strftime("%Y-%m-%d %H:%M:%S")
            except ValueError:
                pass
    return None


def lab_type(msh):
    app, fac = get(msh, 3), get(msh, 4)
    if app == "PATHL7":
        return "PATHL7"
    if app == "IHALAB" or (app == "LAB" and (fac == "KGH" or fac.startswith("IH"))):
        return "IHAPOI"
    if fac == "CML" or app == "CML":
        return "CML"
    return "HL7"


def accession(kind, m):
    orcs, obrs = m.segments("ORC") if has(m, "ORC") else [], m.segments("OBR")
    if kind == "CML":
        placer = get(orcs[0], 2) if orcs else ""
        filler = get(orcs[0], 3) if orcs else ""
        return f"{placer}, {filler}" if filler else placer
    if kind == "IHAPOI":
        for v in (get(obrs[0], 2), get(orcs[0], 2) if orcs else "", get(orcs[0], 4) if orcs else ""):
            if v:
                return v
        return ""
    src = get(orcs[0], 3) if orcs else get(obrs[0], 3)
    parts = src.split("-")
    if len(parts) == 3:
        return parts[0]
    if len(parts) == 5:
        return "-".join(parts[:3])
    return "-".join(parts[:2]) if len(parts) > 1 else ""


def has(m, name):
    try:
        m.segments(name)
        return True
    except KeyError:
        return False


def split_messages(text):
    text = text.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    out, cur = [], []
    for line in text.split("\r"):
        if not line.strip():
            continue
        if line.startswith("MSH") and cur:
            out.append("\r".join(cur) + "\r")
            cur = []
        cur.append(line)
    if cur:
        out.append("\r".join(cur) + "\r")
    return out


def range_ext(rr):
    if "-" in rr:
        lo, _, hi = rr.partition("-")
        try:
            float(lo)
            float(hi)
            return [("minimum", lo), ("maximum", hi)]
        except ValueError:
            pass
    return [("range", rr)]


def import_message(cur, text, file_id, now):
    m = hl7.parse(text)
    msh, pid = m.segment("MSH"), m.segment("PID")
    kind = lab_type(msh)
    hin = get(pid, 4 if kind in ("IHAPOI", "CML") else 2)
    dob, sex = get(pid, 7), get(pid, 8)
    last, first = get(pid, 5, 1, 1), get(pid, 5, 1, 2)
    obrs = m.segments("OBR")
    obxs = m.segments("OBX") if has(m, "OBX") else []
    acc = accession(kind, m)
    cur.execute("INSERT INTO hl7TextMessage (fileUploadCheck_id, message, type, serviceName, created) "
                "VALUES (%s, %s, %s, %s, %s)",
                (file_id, base64.b64encode(text.encode("utf-8")).decode(), kind, "python", now))
    lab_no = cur.lastrowid
    abnormal = any(get(x, 8) not in ("", "N") for x in obxs)
    finals = sum(1 for x in obxs if get(x, 11).upper() in ("F", "C"))
    status = get(obrs[0], 25) or "F"
    disciplines = "/".join(dict.fromkeys(get(o, 4, 1, 2) for o in obrs if get(o, 4, 1, 2)))
    ordering = " ".join(filter(None, (get(obrs[0], 16, 1, 3), get(obrs[0], 16, 1, 2))))
    cur.execute("INSERT INTO hl7TextInfo (lab_no, sex, health_no, result_status, final_result_count, obr_date, "
                "priority, requesting_client, discipline, last_name, first_name, report_status, accessionNum, "
                "filler_order_num, sending_facility, label) VALUES (%s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, %s, "
                "%s, %s, %s, %s, NULL)",
                (lab_no, sex[:1], hin[:12], "A" if abnormal else None, finals, hl7_date(get(obrs[0], 7)),
                 ordering[:100], disciplines[:100], last[:30], first[:30],
                 {"F": "complete", "C": "corrected", "P": "preliminary"}.get(status, status)[:20], acc[:255],
                 get(obrs[0], 3) if kind == "IHAPOI" else "", get(msh, 4)[:60]))
    # Patient match: health number, birth date and sex; exactly one chart.
    demo = mrp = None
    if hin and len(dob) >= 8:
        cur.execute("SELECT demographic_no, provider_no FROM demographic WHERE hin = %s AND year_of_birth = %s "
                    "AND month_of_birth = %s AND date_of_birth = %s AND sex LIKE %s",
                    (hin, dob[:4], dob[4:6], dob[6:8], (sex[:1] or "%") + "%"))
        rows = cur.fetchall()
        if len(rows) == 1:
            demo, mrp = rows[0]
            cur.execute("SELECT merged_to FROM demographic_merged WHERE demographic_no = %s AND deleted = 0 "
                        "ORDER BY id DESC LIMIT 1", (demo,))
            head = cur.fetchone()
            if head:
                demo = head[0]
                cur.execute("SELECT provider_no FROM demographic WHERE demographic_no = %s", (demo,))
                mrp = cur.fetchone()[0]
    if demo is not None:
        cur.execute("SELECT lab_no FROM hl7TextInfo WHERE accessionNum = %s AND lab_no < %s ORDER BY lab_no DESC "
                    "LIMIT 1", (acc, lab_no))
        prev = cur.fetchone()
        if prev:
            cur.execute("SELECT measurement_id FROM measurementsExt WHERE keyval = 'lab_no' AND val = %s",
                        (str(prev[0]),))
            ids = [r[0] for r in cur.fetchall()]
            if ids:
                marks = ", ".join(["%s"] * len(ids))
                cur.execute("INSERT INTO measurementsDeleted (type, demographicNo, providerNo, dataField, "
                            "measuringInstruction, comments, dateObserved, dateEntered, dateDeleted, originalId) "
                            "SELECT SUBSTR(type, 1, 4), demographicNo, providerNo, dataField, measuringInstruction, "
                            "COALESCE(comments, ''), COALESCE(dateObserved, dateEntered), dateEntered, %s, id "
                            f"FROM measurements WHERE id IN ({marks})", (now, *ids))
                cur.execute(f"DELETE FROM measurements WHERE id IN ({marks})", ids)
        for i, obr in enumerate(obrs):
            for j, x in enumerate(obxs):
                if x is None:
                    continue
                code, name, val = get(x, 3, 1, 1), get(x, 3, 1, 2), get(x, 5)
                if not val or not name or val.upper() == "DNR":
                    continue
                cur.execute("SELECT b.ident_code, t.measuringInstruction FROM measurementMap a, measurementMap b, "
                            "measurementType t WHERE b.lab_type = 'FLOWSHEET' AND a.ident_code = %s AND "
                            "a.loinc_code = b.loinc_code AND t.type = b.ident_code ORDER BY b.id LIMIT 1", (code,))
                mapped = cur.fetchone() or ("", "")
                observed = hl7_date(get(x, 14)) or now
                cur.execute("INSERT INTO measurements (type, demographicNo, providerNo, dataField, "
                            "measuringInstruction, comments, dateObserved, dateEntered, appointmentNo) "
                            "VALUES (%s, %s, '0', %s, %s, '', %s, %s, 0)",
                            (mapped[0], demo, val[:255], mapped[1], observed, now))
                mid = cur.lastrowid
                ext = [("lab_no", str(lab_no)), ("abnormal", "A" if get(x, 8) not in ("", "N") else "N"),
                       ("identifier", code), ("name", name), ("labname", get(msh, 4)), ("accession", acc),
                       ("request_datetime", hl7_date(get(obr, 6)) or ""), ("datetime", hl7_date(get(x, 14)) or "")]
                if get(x, 11):
                    ext.append(("olis_status", get(x, 11)))
                if get(x, 6):
                    ext.append(("unit", get(x, 6)))
                ext.extend(range_ext(get(x, 7)))
                ext.append(("other_id", f"{i}-{j}"))
                cur.executemany("INSERT INTO measurementsExt (measurement_id, keyval, val) VALUES (%s, %s, %s)",
                                [(mid, k, v) for k, v in ext])
                obxs[j] = None  # each result once, under the first order
        cur.execute("INSERT INTO patientLabRouting (demographic_no, lab_no, lab_type, created, dateModified) "
                    "VALUES (%s, %s, 'HL7', %s, %s)", (demo, lab_no, now, now))
    # Provider routing.
    docs = []
    segs = [obrs[0]]
    if kind == "IHAPOI" and has(m, "PV1"):
        for r in reps(m.segment("PV1"), 7):
            docs.append(get(m.segment("PV1"), 7, r, 1))
    docs.append(get(obrs[0], 16))
    for s in segs:
        for r in reps(s, 28):
            docs.append(get(s, 28, r, 1))
    column = "hso_no" if kind == "IHAPOI" else "ohip_no"
    providers = []
    for d in dict.fromkeys(filter(None, docs)):
        cur.execute(f"SELECT provider_no FROM provider WHERE {column} = %s", (d,))
        for (p,) in cur.fetchall():
            if p not in providers:
                providers.append(p)
    if not providers:
        providers = [mrp] if mrp not in (None, "", "0") else ["0"]
    routed, k = [], 0
    while k < len(providers):
        p = providers[k]
        k += 1
        cur.execute("SELECT status, frwdProvider_no FROM incomingLabRules WHERE provider_no = %s AND archive = '0'",
                    (p,))
        rules = cur.fetchall()
        routed.append((p, rules[0][0] if rules else "N"))
        for _, fwd in rules:
            if fwd and fwd not in providers:
                providers.append(fwd)
    for p, st in routed:
        cur.execute("INSERT INTO providerLabRouting (provider_no, lab_no, status, comment, timestamp, lab_type) "
                    "VALUES (%s, %s, %s, NULL, %s, 'HL7')", (p, lab_no, st, now))


def main():
    url, listing = sys.argv[1], sys.argv[2]
    u = urllib.parse.urlparse(url)
    conn = pymysql.connect(host=u.hostname, port=u.port or 3306, user=urllib.parse.unquote(u.username),
                           password=urllib.parse.unquote(u.password or ""), database=u.path.lstrip("/"),
                           charset="utf8mb4", autocommit=False)
    with open(listing) as f:
        paths = [p for p in f.read().splitlines() if p]
    messages = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        md5 = hashlib.md5(raw).hexdigest()
        texts = split_messages(raw.decode("utf-8", errors="replace"))
        messages += len(texts)
        cur = conn.cursor()
        cur.execute("SELECT id FROM fileUploadCheck WHERE md5sum = %s LIMIT 1", (md5,))
        if cur.fetchone():
            conn.rollback()
            continue
        now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        name = os.path.basename(path)
        cur.execute("INSERT INTO fileUploadCheck (provider_no, filename, md5sum, date_time) VALUES ('0', %s, %s, %s)",
                    (f"LabUpload.{name}.{int(time.time() * 1000)}", md5, now))
        file_id = cur.lastrowid
        try:
            for text in texts:
                import_message(cur, text, file_id, now)
            conn.commit()
        except Exception as e:  # noqa: BLE001 - a bad file rolls back, as OSCAR's clean() does
            conn.rollback()
            print(f"python importer: {name}: {type(e).__name__}: {e}", file=sys.stderr)
    secs = time.perf_counter() - start
    conn.close()
    print(f"impl=python-import messages={messages} files={len(paths)} seconds={secs:.3f} "
          f"msg_per_s={messages / secs:.2f}")


if __name__ == "__main__":
    main()
