"""Personal-data battery C, written last and scored once before any change it could prompt (the figures
reported for issue 12): new names, hosts, formats, templates and benign sentences, none reused from A or B."""

from __future__ import annotations

import random

from ximgctx.governance.pii import luhn_ok

TEMPLATES = [
    "selling my couch, text {} for pics",
    "Lost dog near the park!! Call {}",
    "{} <- that's the one",
    "per the flyer ({}), doors open early",
    "she said to reach her via {} lol",
    "Here: {}",
    "pls don't share {} with anyone",
    "update — {} is the new contact, thanks all",
    "“{}” was written on the back",
    "{}!!!",
]


def _luhn(prefix: str, rng: random.Random, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _iban(rng: random.Random, country: str, letters: int, digits: int, group: bool) -> str:
    bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
    bban += "".join(str(rng.randrange(10)) for _ in range(digits))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if group else raw


def items(seed: int = 2026) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    names = ["amara", "diego", "hana", "oskar", "yusuf", "chloé", "ravi", "sofia", "tariq", "elif", "marek"]
    out: list[tuple[str, str]] = []
    for i in range(36):
        n, m = rng.choice(names), rng.choice(names)
        out.append(("email", [
            f"{n}.{m}@hotmail.com", f"{n}{i}@posteo.de", f"{n}+tickets@gmail.com", f"{n}_{m}@firm.co.jp",
            f"{n} at protonmail dot com", f"{n}[at]riseup[dot]net", f"{n}@students.uni-wien.ac.at",
            f"{n.upper()}.{m}@Mail.RU", f"{n}(at)web(dot)de", f"ｃｏｎｔａｃｔ＠{m}．ｎｅｔ", f"{n}@xn--bcher-kva.example",
            f"info@{m}-bakery.com",
        ][i % 12]))  # fmt: skip
    for i in range(42):
        d4, d3 = rng.randrange(1000, 9999), rng.randrange(200, 999)
        out.append(("phone", [
            f"(718) {d3}-{d4}", f"718.{d3}.{d4}", f"+1 (305) {d3} {d4}", f"1 (800) {d3}-{d4}",
            f"+44 (0)20 7123 {d4}", f"+44 161 496 {d4 % 1000:03d}0", f"0161 496 {d4 % 1000:03d}0",
            f"+49 (0)30 {d3} {d4}", f"+33 (0)6 {d4 // 100:02d} {d4 % 100:02d} 12 34", f"+91-98{d3}-{d4}{d4 % 10}",
        ][i % 10]))  # fmt: skip
    for i in range(36):
        n = rng.choice(names) + rng.choice(["", "_", ".", "99", "_x"]) + str(rng.randrange(1, 99))
        out.append(("handle", [f"@{n}", f"@{n}.bsky.social", f"@{n}@mastodon.online", f"u/{n}",
                               f"＠{n}", f"@{n.title()}", "@Łukasz_" + str(i), f"@{n}_"][i % 8]))  # fmt: skip
    for i in range(36):
        out.append(("url", [
            f"https://bit.ly/3x{i}Yz", f"https://www.instagram.com/p/C{i}xYz/", f"http://localnews{i}.co.uk/story",
            f"www.etsy.com/shop/maker{i}", f"linktr.ee/artist{i}", f"hxxps://free-gift{i}[.]xyz/claim",
            f"tiktok.com/@user{i}/video/72{i}", f"https://example.museum/item?id={i}&ref=post", f"paypal.me/payme{i}",
        ][i % 9]))  # fmt: skip
    for i in range(30):
        n = _luhn(["4", "53", "37", "6011", "2720", "35"][i % 6], rng, 15 if i % 6 == 2 else 16)
        groups = [n[:4], n[4:8], n[8:12], n[12:]] if len(n) == 16 else [n[:4], n[4:10], n[10:]]
        out.append(("card", [n, " ".join(groups), "-".join(groups)][i % 3]))
    for i in range(25):
        spec = [("DE", 0, 18), ("GB", 4, 14), ("ES", 0, 20), ("IE", 4, 14), ("CH", 0, 17)][i % 5]
        out.append(("iban", _iban(rng, *spec, group=i % 2 == 0)))
    for i in range(25):
        a, g, s = rng.randrange(1, 665), rng.randrange(1, 99), rng.randrange(1, 9999)
        if a == 666:
            a = 667
        out.append(("ssn", [f"{a:03d}-{g:02d}-{s:04d}", f"{a:03d} {g:02d} {s:04d}"][i % 2]))
    for i in range(25):
        out.append(("ip", [
            f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"2600:1f18:{rng.randrange(65536):x}:{rng.randrange(65536):x}::{rng.randrange(1, 4096):x}",
            f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}/24",
            f"fd00::{rng.randrange(1, 65536):x}",
        ][i % 5]))  # fmt: skip
    for i in range(20):
        out.append(("crypto", [
            "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh", "12c6DSiU4Rq3P4ZxziKxzrGLH7VuD8r1ZD",
            "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40)),
            "0x" + "".join(rng.choice("0123456789ABCDEF") for _ in range(40)),
        ][i % 4]))  # fmt: skip
    for i in range(25):
        k = rng.randrange(3, 9000)
        out.append(("address", [
            f"{k} Magnolia Avenue", f"{k} E 71st Street", f"{k} Old Mill Lane, Apt {i + 2}", f"{k} Harbor Blvd",
            f"{k} King's Road", f"Bahnhofstraße {k % 120}", f"{k % 150} boulevard Saint-Germain",
            f"{k} Willow Creek Drive",
        ][i % 8]))  # fmt: skip
    return [(k, v, TEMPLATES[i % len(TEMPLATES)]) for i, (k, v) in enumerate(out)]


BENIGN = [
    "Rust 1.75 and Go 1.22 both shipped this month",
    "ASP.NET MVC vs Razor Pages, which one?",
    "Deno.land is where the docs live? no wait",
    "We use Three.js and Chart.js in the dashboard",
    "the station sits at 59.3293, 18.0686",
    "GPS: 35.6762 N, 139.6503 E",
    "UPS 1Z 999 AA1 01 2345 6784 arrives Friday",
    "Amazon order 112-3456789-1234567 shipped",
    "Royal Mail AB123456789GB is in transit",
    "firmware 4.1.2.7 bricked the router",
    "kubectl 1.29.3, helm 3.14.2",
    "Figure 12.4.2 shows the curve",
    "photo_2024-05-06_14-33-21.jpg is the best one",
    "notes.md and todo.txt are in the repo root",
    "install.sh needs chmod +x first",
    "data.parquet is 1.2 GB compressed",
    "requests.get() timed out after 30s",
    "console.log(user.name) prints undefined",
    "the deploy window is 02:00-04:00 UTC",
    "Timestamp 1714000000 is in April 2024",
    "Due date 2024/07/15, no extensions",
    "she turned 30 on 7.8.2023",
    "rent is $1,850/mo plus utilities",
    "market cap 2.8 trillion, P/E 31.5",
    "The crowd was about 45,000 strong",
    "Final set 6-4, 3-6, 7-5",
    "ran the 400m in 52.3 seconds",
    "split time 1:02:45 at the half",
    "he's 5 ft 11 and 180 lb",
    "volume at 11 and rising",
    "Suite 1400 on the 14th floor",
    "Platform 9 3/4 obviously",
    "Train RE 7 to Kiel leaves at 8:12",
    "Highway 401 is a parking lot",
    "the 3rd Street Promenade was packed",
    "Apt 2C has a great view",
    "we walked 12,345 steps along Ocean Drive",
    "Meet at the corner of 5th and Main",
    "I'm @ the gym, back at 7",
    "dinner @ 8?",
    "email is down, use the phone",
    "my @ key is broken",
    "DM's open for commissions",
    "the store's website crashed",
    "link in bio for the recipe",
    "call your mom",
    "battery at 3%, bye",
    "4.9 stars from 2,310 reviews",
    "model SM-S918B firmware update",
    "serial number C02XL0GSJGH5 on the box",
    "part 1234-5678-90 is back-ordered",
    "invoice 2024-00042 due Monday",
    "ticket PROJ-1234 in review",
    "issue #98765 closed",
    "commit 9fceb02 fixed it",
    "md5 d41d8cd98f00b204e9800998ecf8427e",
    "request id 7f3e1a2b-9c4d-4e5f-8a6b-1c2d3e4f5a6b",
    "HTTP 429 Too Many Requests",
    "ports 3000 and 8443 are open",
    "cache TTL 3600",
    "bind to 127.0.0.1 only",
    "the regex [0-9]{4} matches years",
    "2 + 2 = 4 and 10 / 2 = 5",
    "aspect 21:9 ultrawide",
    "the 1960s and the 1970s",
    "Top 50 albums of 2024",
    "Android 14 QPR2 beta",
    "macOS 14.4.1 fixed the bug",
    "Mistral-7B-Instruct-v0.2 outputs",
    "RX 7900 XTX at 355W",
    "a 2L jug for 1.49",
    "stay 1.5 m apart",
    "S02E05 was incredible",
    "Vol. 12, Issue 3, pp. 45-67",
    "ISBN 0-306-40615-2 is valid",
    "ISSN 2049-3630",
    "DOI 10.1038/nature12373",
    "arXiv:1706.03762 changed everything",
    "etc. etc. you know the drill",
    "N.Y.C. in the fall",
    "M.Sc. thesis submitted",
    "Dr. Strange 2 was fine",
    "St. Louis in July is hot",
    "Mt. Fuji at sunrise",
    "it's 4:20 somewhere",
    "my.secret.plan is a folder name",
    "well.well.well look who it is",
    "lol.ok.bye",
    "golfed it to 37 bytes",
    "-12.5C with wind chill",
    "cholesterol 185 mg/dL",
    "blood type AB- is rare",
    "shoe size EU 42",
    "a 20% tip on $64.30",
    "Q4 earnings at 5:00pm ET",
    "level 60 after 800 hours",
    "flight BA 117 LHR-JFK",
    "scored twice in 9 minutes",
    "covid cases down 8.4% week over week",
    "the ratio 1:2:3 keeps coming up",
    "pi is 3.14159265358979",
    "Bach's BWV 1007 in G major",
    "Ode to Joy, Symphony No. 9 in D minor, Op. 125",
]
