#!/usr/bin/env python3
"""Synthetic lab workload for scripts/bench-e2e: HL7 v2.3 ORU^R01 files in the shapes of the
three BC feeds (Excelleris PATHL7, Interior Health POI, CML) and a SQL seed with the synthetic
population they refer to. Deterministic for a given --seed. No real person: every name starts
with SYNTH, every PHN starts with 9 and fails the BC MOD 11 check digit (as fixtures/hl7 does),
phone numbers are in the fictional 555-01xx range.

    bench_workload.py --messages N --patients P --providers D --out DIR [--seed S]

writes
    DIR/files/<nnnnnnn>.hl7   one input file each, named in arrival order
    DIR/seed.sql              providers, demographics and a few forwarding rules (multi-row INSERTs)
    DIR/manifest.json         per file: name, messages, kind; and the totals of the mix

The mix (fractions of files): ~85% of new messages for seeded patients (PHN + DOB + sex of a
demographic row), the rest for PHNs in no row (unmatched); ~8% later versions of an earlier
accession (preliminary -> final -> corrected, new content, same accession); ~2% exact byte
duplicates of an earlier file; ~1% multi-message batch files (2-5 messages). Results per
message: 2-40 OBX, most of them small.
"""
import argparse
import json
import os
import random

FEEDS = ("PATHL7", "IHAPOI", "CML")
FEED_WEIGHTS = (0.6, 0.2, 0.2)

# (code, name, units, low, high, decimals) -- generic chemistry/haematology analytes.
ANALYTES = [
    ("14682-9", "Creatinine", "umol/L", 50, 110, 0),
    ("33914-3", "Estimated GFR", "mL/min/1.73m2", 60, 120, 0),
    ("2951-2", "Sodium", "mmol/L", 135, 145, 0),
    ("2823-3", "Potassium", "mmol/L", 3.5, 5.0, 1),
    ("2075-0", "Chloride", "mmol/L", 98, 107, 0),
    ("1963-8", "Bicarbonate", "mmol/L", 22, 29, 0),
    ("14749-6", "Glucose", "mmol/L", 3.6, 7.8, 1),
    ("4548-4", "Hemoglobin A1c", "%", 4.0, 6.0, 1),
    ("14647-2", "Cholesterol", "mmol/L", 2.0, 5.2, 1),
    ("14646-4", "HDL Cholesterol", "mmol/L", 1.0, 2.5, 1),
    ("22748-8", "LDL Cholesterol", "mmol/L", 1.0, 3.5, 1),
    ("14927-8", "Triglycerides", "mmol/L", 0.5, 1.7, 1),
    ("1742-6", "Alanine Aminotransferase", "U/L", 10, 55, 0),
    ("1920-8", "Aspartate Aminotransferase", "U/L", 10, 40, 0),
    ("6768-6", "Alkaline Phosphatase", "U/L", 30, 110, 0),
    ("14631-6", "Bilirubin Total", "umol/L", 3, 20, 0),
    ("3016-3", "TSH", "mU/L", 0.3, 4.7, 2),
    ("718-7", "Hemoglobin", "g/L", 120, 160, 0),
    ("6690-2", "WBC", "x10E9/L", 4.0, 11.0, 1),
    ("789-8", "RBC", "x10E12/L", 4.2, 5.4, 2),
    ("4544-3", "Hematocrit", "L/L", 0.36, 0.48, 2),
    ("777-3", "Platelets", "x10E9/L", 150, 400, 0),
    ("787-2", "MCV", "fL", 80, 100, 0),
    ("2276-4", "Ferritin", "ug/L", 13, 145, 0),
    ("2132-9", "Vitamin B12", "pmol/L", 150, 700, 0),
    ("1989-3", "Vitamin D 25-OH", "nmol/L", 75, 250, 0),
    ("2947-0", "Sodium Urine", "mmol/L", 40, 220, 0),
    ("14959-1", "Microalbumin/Creatinine", "mg/mmol", 0, 2.0, 1),
    ("5902-2", "Prothrombin Time", "s", 9, 12, 1),
    ("6301-6", "INR", "", 0.9, 1.1, 1),
]
PANELS = ["CHEM1", "CHEM4", "CHEM6", "HAEM1", "COAG", "URIN"]
BATTERIES = [("LYTE", "Electrolytes"), ("CBC", "Complete Blood Count"), ("LIPID", "Lipid Profile"),
             ("LIVER", "Liver Panel"), ("RENAL", "Renal Function"), ("THY", "Thyroid")]
LABS = ["LIFELABS", "VIHA", "CW", "VML", "FHA"]
SEXES = ["F", "M"]


def fake_phn(n, valid_check=False):
    """A 10-digit PHN starting with 9 whose last digit FAILS the BC MOD 11 check."""
    body = "9" + f"{n:08d}"
    weights = [2, 4, 8, 5, 10, 9, 7, 3]
    s = sum(int(d) * w for d, w in zip(body[1:9], weights)) % 11
    check = 11 - s
    wrong = (check + 3) % 10 if check < 10 else 7
    return body + str(wrong)


def synth_name(rng):
    syll = ["ALD", "BER", "COR", "DAV", "ELM", "FEN", "GAR", "HOL", "IVO", "JAR", "KEL", "LOR",
            "MAR", "NOV", "ORL", "PER", "QUI", "ROS", "SAL", "TOR", "ULV", "VAN", "WES", "YAR"]
    last = "SYNTH" + rng.choice(syll) + rng.choice(syll)
    first = "SYNTH" + rng.choice(syll) + rng.choice(["A", "E", "O", "IN", "ETH"])
    return last, first


def obx_count(rng):
    r = rng.random()
    if r < 0.6:
        return rng.randint(2, 8)
    if r < 0.9:
        return rng.randint(9, 20)
    return rng.randint(21, 40)


def value(rng, a):
    code, name, units, lo, hi, dec = a
    span = hi - lo
    v = rng.uniform(lo - span * 0.3, hi + span * 0.3)
    flag = "N" if lo <= v <= hi else ("H" if v > hi else "L")
    v = max(v, 0)
    text = f"{v:.{dec}f}"
    rng_text = f"{lo}-{hi}" if lo else f"<{hi}"
    return text, flag, rng_text


def ts(minute):
    """yyyyMMddHHmmss for `minute` minutes after 2026-01-01 00:00 (no calendar library needed)."""
    days, rem = divmod(minute, 24 * 60)
    months = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    m = 0
    days %= 365
    while days >= months[m]:
        days -= months[m]
        m += 1
    return f"2026{m + 1:02d}{days + 1:02d}{rem // 60:02d}{rem % 60:02d}00"


class Gen:
    def __init__(self, seed, patients, providers):
        self.rng = random.Random(seed)
        self.patients = patients
        self.providers = providers
        self.ctl = 0
        self.acc = 0

    # ---- population -------------------------------------------------------------------
    def provider(self, i):
        """(provider_no, MSP number for ohip_no, IHA id for hso_no, last, first)."""
        return (f"{200001 + i}", f"{60001 + i}", f"SYD{i + 1:04d}", "SYNTHDOC", f"SYNTH{i + 1:04d}")

    def patient(self, i):
        r = random.Random(i * 7919 + 17)
        last, first = synth_name(r)
        y = r.randint(1930, 2024)
        mo = r.randint(1, 12)
        d = r.randint(1, 28)
        sex = "X" if i % 997 == 0 else SEXES[i % 2]
        mrp = None if i % 50 == 0 else self.provider(r.randrange(self.providers))[0]
        return {"no": 100001 + i, "phn": fake_phn(10000000 + i), "last": last, "first": first,
                "dob": f"{y:04d}{mo:02d}{d:02d}", "sex": sex, "mrp": mrp}

    def seed_sql(self, path):
        def q(s):
            return "NULL" if s is None else "'" + str(s).replace("\\", "\\\\").replace("'", "''") + "'"
        with open(path, "w", encoding="utf-8") as f:
            f.write("-- oscarflow bench population (scripts/bench_workload.py). Synthetic only.\n")
            cols = ("provider_no, last_name, first_name, provider_type, specialty, team, sex, dob, address, phone, "
                    "work_phone, ohip_no, rma_no, billing_no, hso_no, status, comments, provider_activity, "
                    "practitionerNo, init, job_title, email, title, lastUpdateUser, lastUpdateDate, "
                    "signed_confidentiality, practitionerNoType")
            rows = []
            for i in range(self.providers):
                no, msp, hso, last, first = self.provider(i)
                rows.append(f"({q(no)}, {q(last)}, {q(first)}, 'doctor', 'GP', '', 'F', NULL, '1 SYNTH STREET', "
                            f"'604-555-0100', '604-555-0100', {q(msp)}, NULL, {q(msp)}, {q(hso)}, '1', NULL, NULL, "
                            f"NULL, 'SD', NULL, NULL, 'Dr', '100001', '2025-01-02 09:00:00', NULL, NULL)")
            for k in range(0, len(rows), 500):
                f.write(f"INSERT INTO provider ({cols}) VALUES\n" + ",\n".join(rows[k:k + 500]) + ";\n")
            cols = ("demographic_no, title, last_name, first_name, address, city, province, postal, phone, email, "
                    "year_of_birth, month_of_birth, date_of_birth, hin, ver, roster_status, patient_status, "
                    "date_joined, chart_no, provider_no, sex, hc_type, lastUpdateUser, lastUpdateDate")
            rows = []
            for i in range(self.patients):
                p = self.patient(i)
                dob = p["dob"]
                rows.append(f"({p['no']}, NULL, {q(p['last'])}, {q(p['first'])}, '1 SYNTH AVENUE', 'SYNTHVILLE', "
                            f"'BC', 'V0V 0V0', '604-555-0199', NULL, {q(dob[:4])}, {q(dob[4:6])}, {q(dob[6:])}, "
                            f"{q(p['phn'])}, NULL, 'RO', 'AC', '2020-01-01', {q('SY' + str(p['no']))}, "
                            f"{q(p['mrp'])}, {q(p['sex'])}, 'BC', '100001', '2025-01-02 09:00:00')")
                if len(rows) == 1000:
                    f.write(f"INSERT INTO demographic ({cols}) VALUES\n" + ",\n".join(rows) + ";\n")
                    rows = []
            if rows:
                f.write(f"INSERT INTO demographic ({cols}) VALUES\n" + ",\n".join(rows) + ";\n")
            # A few forwarding rules, as clinics have them (provider i forwards to i+1).
            rules = [f"({q(self.provider(i)[0])}, 'N', {q(self.provider(i + 1)[0])}, '0')"
                     for i in range(0, min(self.providers - 1, 40), 4)]
            if rules:
                f.write("INSERT INTO incomingLabRules (provider_no, status, frwdProvider_no, archive) VALUES\n"
                        + ",\n".join(rules) + ";\n")

    # ---- messages ---------------------------------------------------------------------
    def new_order(self):
        """A fresh lab order: feed, patient, providers, results (version 1)."""
        rng = self.rng
        feed = rng.choices(FEEDS, FEED_WEIGHTS)[0]
        if rng.random() < 0.85:
            p = dict(self.patient(rng.randrange(self.patients)))
            kind = "matched"
        else:
            u = rng.randrange(10**7)
            last, first = synth_name(rng)
            p = {"phn": fake_phn(80000000 + u), "last": last, "first": first,
                 "dob": f"{rng.randint(1930, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                 "sex": rng.choice(SEXES)}
            kind = "unmatched"
        ordering = rng.randrange(self.providers + 3)  # a few numbers match no provider
        copies = [rng.randrange(self.providers) for _ in range(rng.choice([0, 0, 1, 1, 2]))]
        n = obx_count(rng)
        results = []
        for _ in range(n):
            a = rng.choice(ANALYTES)
            results.append((a,) + value(rng, a))
        self.acc += 1
        minute = rng.randrange(60 * 24 * 300)
        return {"feed": feed, "patient": p, "kind": kind, "ordering": ordering, "copies": copies,
                "results": results, "acc": self.acc, "version": 1, "minute": minute,
                "status": "P" if rng.random() < 0.3 else "F", "lab": rng.choice(LABS),
                "battery": rng.choice(BATTERIES), "panel": rng.choice(PANELS)}

    def next_version(self, o):
        """The next version of an order: same accession, updated results and status."""
        rng = self.rng
        o = dict(o)
        o["version"] += 1
        o["status"] = "F" if o["status"] == "P" else "C"
        res = list(o["results"])
        for _ in range(max(1, len(res) // 5)):
            i = rng.randrange(len(res))
            a = res[i][0]
            res[i] = (a,) + value(rng, a)
        o["results"] = res
        o["minute"] += rng.randint(60, 600)
        return o

    def doc(self, i, feed):
        if i >= self.providers:
            return (f"{99990 + i - self.providers}", "NOBODY", "SYNTHDOC") if feed != "IHAPOI" else \
                (f"SYX{i:04d}", "NOBODY", "SYNTHDOC")
        no, msp, hso, last, first = self.provider(i)
        return (hso if feed == "IHAPOI" else msp, last, first)

    def render(self, o):
        self.ctl += 1
        feed, p = o["feed"], o["patient"]
        t0, t1 = ts(o["minute"]), ts(o["minute"] + 90)
        ordd = self.doc(o["ordering"], feed)
        copies = [self.doc(c, feed) for c in o["copies"]]
        status = o["status"]
        obx_status = "C" if status == "C" else ("F" if status == "F" else "I")
        segs = []
        groups = [o["results"][k:k + 10] for k in range(0, len(o["results"]), 10)]
        if feed == "PATHL7":
            ctl = f"SY{self.ctl:08d}"
            segs.append(f"MSH|^~\\&|PATHL7|{o['lab']}|HTTPCLIENT|ZZCLINIC1|{t1}||ORU^R01|{ctl}|P|2.3|||ER|AL")
            segs.append(f"PID||{p['phn']}|||{p['last']}^{p['first']}||{p['dob']}|{p['sex']}|||||(604)555-0150")
            xcn = f"{ordd[0]}^{ordd[1]}^{ordd[2]}"
            cc = "~".join([xcn] + [f"{c[0]}^{c[1]}^{c[2]}" for c in copies])
            for gi, g in enumerate(groups):
                code, name = o["battery"]
                filler = f"26-{300000000 + o['acc']}-{code}{gi}-{o['version']}"
                segs.append(f"ORC|RE||{filler}|||||||||{xcn}")
                segs.append(f"OBR|{gi + 1}||{filler}|{code}^{name}||{t0}|{t0}|||||||{t0}||{xcn}||||||{t1}||"
                            f"{o['panel']}|{status}|||{cc}")
                for k, (a, v, flag, rr) in enumerate(g):
                    segs.append(f"OBX|{k + 1}|NM|{a[0]}^{a[1]}||{v}|{a[2]}|{rr}|{flag}|||{obx_status}|||{t1}")
            segs.append("NTE|||Synthetic benchmark data.")
        elif feed == "IHAPOI":
            ctl = f"{950000000 + self.ctl}.6.L{self.ctl % 99999}"
            segs.append(f"MSH|^~\\&|LAB^2.0|KGH|IIM||{t1}||ORU^R01|{ctl}|P|2.3|||AL")
            segs.append(f"PID|1||{7000000 + o['acc']:010d}|{p['phn']}^^^BC|{p['last']}^{p['first']}||{p['dob']}|"
                        f"{p['sex']}|||1 SYNTH STREET^^KELOWNA^BC^V0V 0V0||250-555-0150")
            xcn = f"{ordd[0]}^{ordd[1]}^{ordd[2]}^^^DR"
            segs.append(f"PV1|1|O|2E^H2E^D^.|U|||{xcn}")
            placer = f"1005:S{o['acc']:07d}R"
            cc = "~".join([xcn] + [f"{c[0]}^{c[1]}^{c[2]}^^^DR" for c in copies])
            segs.append(f"ORC|SC|{placer}|||CM||||{t0}|{xcn}||{xcn}")
            for gi, g in enumerate(groups):
                segs.append(f"OBR|{gi + 1}|{placer}|{placer}{gi}|L{gi}^{o['battery'][1]}|||{t0}|||SYNTH||||{t0}||"
                            f"{xcn}||||||{t1}||LAB|{status}|||{cc}")
                for k, (a, v, flag, rr) in enumerate(g):
                    segs.append(f"OBX|{k + 1}|ST|{a[0]}^{a[1]}|{k + 1}|{v}|{a[2]}|{rr}|{flag}|||{obx_status}|||{t1}||")
        else:  # CML
            ctl = f"C{self.ctl:09d}"
            segs.append(f"MSH|^~\\&|Reports|CML||41566|{t1}||ORU^R01|{ctl}|P|2.3")
            segs.append(f"PID|1|||{p['phn']}^^^BC|{p['last']}^{p['first']}||{p['dob']}|{p['sex']}|||||2505550150")
            xcn = f"{ordd[0]}^{ordd[1]} {ordd[2]}"
            placer = f"SY{o['acc']:07d}"
            segs.append(f"ORC|NW|{placer}|||{'F' if status != 'P' else 'P'}|||||||{xcn}|||{t0[:8]}")
            for gi, g in enumerate(groups):
                for k, (a, v, flag, rr) in enumerate(g):
                    segs.append(f"OBR|{gi * 10 + k + 1}|{placer}||{a[0]}^{a[1].upper()}||{t0[:8]}|{t0[:8]}|||||||||"
                                f"{xcn}|||||||||{'F' if status != 'P' else 'P'}")
                    segs.append(f"OBX|1|ST|{a[0]}^{a[1].upper()}|CHEMISTRY^^|{v}|{a[2].upper()}|{rr}|"
                                f"{'' if flag == 'N' else flag}|||{obx_status}||303^{a[0]}||70")
        return "\r".join(segs) + "\r"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--providers", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    g = Gen(a.seed, a.patients, a.providers)
    os.makedirs(os.path.join(a.out, "files"), exist_ok=True)
    g.seed_sql(os.path.join(a.out, "seed.sql"))
    rng = g.rng
    files = []  # (bytes, messages, kind)
    open_orders = []  # recent orders that may get a new version
    messages = 0
    while messages < a.messages:
        r = rng.random()
        if r < 0.02 and files:
            src = files[rng.randrange(max(0, len(files) - 2000), len(files))]
            files.append((src[0], src[1], "duplicate"))
            messages += src[1]
            continue
        if r < 0.10 and open_orders:
            i = rng.randrange(len(open_orders))
            o = g.next_version(open_orders[i])
            if o["status"] == "C":
                open_orders.pop(i)
            else:
                open_orders[i] = o
            files.append((g.render(o).encode(), 1, "version-" + o["kind"]))
            messages += 1
            continue
        if r < 0.11:
            k = min(rng.randint(2, 5), a.messages - messages)
            body = "".join(g.render(g.new_order()) for _ in range(max(k, 1)))
            files.append((body.encode(), max(k, 1), "batch"))
            messages += max(k, 1)
            continue
        o = g.new_order()
        if rng.random() < 0.2:
            open_orders.append(o)
            if len(open_orders) > 500:
                open_orders.pop(0)
        files.append((g.render(o).encode(), 1, o["kind"]))
        messages += 1
    manifest = {"seed": a.seed, "patients": a.patients, "providers": a.providers, "messages": messages,
                "files": []}
    kinds = {}
    for n, (body, m, kind) in enumerate(files):
        name = f"{n:07d}.hl7"
        with open(os.path.join(a.out, "files", name), "wb") as f:
            f.write(body)
        manifest["files"].append({"name": name, "messages": m, "kind": kind, "bytes": len(body)})
        kinds[kind] = kinds.get(kind, 0) + m
    manifest["kinds"] = kinds
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    total = sum(len(b) for b, _, _ in files)
    mix = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"workload: {messages} messages in {len(files)} files, {total / 1e6:.1f} MB, {a.patients} patients, "
          f"{a.providers} providers ({mix})")


if __name__ == "__main__":
    main()
