"""Personal-data battery B, written after tuning, independently of battery A: other names, hosts,
formats, templates and benign sentences. Its figures are the ones reported."""

from __future__ import annotations

import random

from ximgctx.governance.pii import luhn_ok

TEMPLATES = [
    "new number who dis: {}",
    "if anyone finds my wallet, {} pls",
    "Posting this for my aunt — {} — she is selling the bike",
    "ok so {} right?",
    "Replying to everyone: use {} from now on.",
    "[{}]",
    "{}",
    "Meet there. Details: {}; bring snacks",
]


def _luhn(prefix: str, rng: random.Random, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _iban(rng: random.Random, country: str, letters: int, digits: int) -> str:
    bban = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(letters))
    bban += "".join(str(rng.randrange(10)) for _ in range(digits))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.6 else raw


def items(seed: int = 7) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    names = ["kofi", "ingrid", "tomasz", "aiko", "rahul", "fatima", "noah", "léa", "björn", "mei"]
    out: list[tuple[str, str]] = []
    for i in range(40):
        n = rng.choice(names)
        out.append(("email", [
            f"{n}.{i}@outlook.com", f"{n}-work@company.org", f"{n}@sub.mail.university.ac.uk",
            f"{n} at yahoo dot com", f"{n}{{at}}fastmail{{dot}}com", f"{n} (at) gmx (dot) de",
            f"{n.upper()}@ICLOUD.COM", f"ｍａｉｌ{i}＠ｅｘａｍｐｌｅ．ｏｒｇ",
        ][i % 8]))  # fmt: skip
    for i in range(40):
        x = rng.randrange(1000, 9999)
        out.append(("phone", [
            f"(646) 555-{x}", f"+1-202-555-{x}", f"202 555 {x}", f"+44 7700 900{x % 1000:03d}",
            f"07700 900{x % 1000:03d}", f"+49 151 2345{x}", f"0151 2345{x}", f"+33 1 44 55 {x // 100:02d} {x % 100:02d}",
            f"+91 99{x % 1000:03d} 5{x % 10000:04d}", f"00 49 89 {x}{x % 1000:03d}",
        ][i % 10]))  # fmt: skip
    for i in range(35):
        n = rng.choice(names) + str(rng.randrange(10, 999))
        out.append(("handle", [f"@{n}", f"@{n}_official", f"u/{n}", f"@{n}.social", f"@{n}@fosstodon.org",
                               f"＠{n}", f"@{n.capitalize()}", "@ñandú_" + str(i)][i % 8]))  # fmt: skip
    for i in range(35):
        out.append(("url", [
            f"https://t.co/Ab{i}Cd", f"http://example.org/p?id={i}", f"www.shop{i}.com", f"blog{i}.example.net/post",
            f"hxxp://phish{i}[.]ru/login", f"https://www.youtube.com/watch?v=x{i}", f"my-site{i}.store",
            f"docs.example.dev/guide/{i}",
        ][i % 8]))  # fmt: skip
    for i in range(30):
        n = _luhn(["4", "55", "34", "6011", "2221"][i % 5], rng, 15 if i % 5 == 2 else 16)
        groups = [n[:4], n[4:8], n[8:12], n[12:]]
        out.append(("card", [n, " ".join(groups), "-".join(groups), ".".join(groups)][i % 4]))
    for i in range(25):
        out.append(
            (
                "iban",
                _iban(
                    rng, *[("DE", 0, 18), ("GB", 4, 14), ("FR", 0, 23), ("IT", 1, 22), ("BE", 0, 12)][i % 5]
                ),
            )
        )
    for i in range(25):
        a, g, s = rng.randrange(101, 660), rng.randrange(10, 99), rng.randrange(1000, 9999)
        out.append(("ssn", [f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}.{g}.{s}"][i % 3]))
    for i in range(25):
        out.append(("ip", [
            f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"2a02:{rng.randrange(4096, 65535):x}:{rng.randrange(65536):x}::{rng.randrange(1, 4096):x}",
            f"2001:0db8:85a3:0000:0000:8a2e:0370:{rng.randrange(4096, 65535):x}",
        ][i % 4]))  # fmt: skip
    for i in range(20):
        out.append(("crypto", [
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40)), "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
        ][i % 4]))  # fmt: skip
    for i in range(25):
        k = rng.randrange(2, 4000)
        out.append(("address", [
            f"{k} Sunset Boulevard", f"{k} W 34th St", f"{k} Pine Ridge Road, Suite {i + 1}", f"{k} Elm Ct",
            f"Lindenstraße {k % 300}", f"{k % 90} avenue des Champs", f"{k} Queen Victoria Street",
            f"Am Ring {k % 99}",
        ][i % 8]))  # fmt: skip
    return [(k, v, TEMPLATES[i % len(TEMPLATES)]) for i, (k, v) in enumerate(out)]


BENIGN = [
    "Just deployed ASP.NET Core 8.0 to prod, wish me luck",
    "Socket.IO vs WebSockets, thoughts?",
    "Express.js, Nuxt.js and D3.js walk into a bar",
    "Pinned at 37.7749, -122.4194 — the bay looks great",
    "Coordinates: 48.8584° N, 2.2945° E",
    "FedEx tracking 7712 3456 7890 says tomorrow",
    "DHL JJD0099999999 is stuck in customs",
    "USPS 9205 5000 0000 0000 0000 00 delivered",
    "Build 2024.03.15-rc2 is tagged",
    "release v3.2.1.0 notes are up",
    "Node 20.11.1 and npm 10.2.4",
    "see chapter 2.3.4 for the proof",
    "the photo is IMG_2041.JPG, the clip VID_0099.mp4",
    "config.json and package-lock.json got out of sync",
    "run.sh exits 127, check PATH",
    "the archive backup.tar.gz is 2.3 GB",
    "Python's os.path.join is fine here",
    "print(df.head()) shows NaN everywhere",
    "window.location.href changed again",
    "our standup is at 9:15 every day",
    "It's 2024-12-31 23:59:59 and counting",
    "Doors at 19:30, show at 20:00",
    "Born on 03/14/1988 like Pi day",
    "I paid $2,349.00 for the laptop",
    "Revenue grew 14.7% to 3.2 billion",
    "The account had 1,048,576 followers at peak",
    "Score: 7-5, 6-7, 7-6 in the final",
    "That shot was 41.2 meters out",
    "Lap time 1:23.456 at Monza",
    "He is 6'2\" and weighs 190 lbs",
    "Dial it to 11, obviously",
    "Room 1208, floor 12",
    "Gate A23 boarding at 14:05",
    "Train ICE 598 to Munich is late",
    "Route 9 and Highway 61 revisited",
    "Apartment 4B is for rent",
    "We live on the 3rd floor now",
    "walked 10,000 steps down Main Street today",
    "The street fair on 5th is fun",
    "meet at the corner of Oak and Pine",
    "I'm @ the office till 6",
    "lunch @ noon?",
    "email me later, not now",
    "my handle is the same as everywhere",
    "DM me for details",
    "visit our store downtown",
    "the website is down again",
    "Click the link in bio",
    "call me maybe",
    "the phone died at 2%",
    "Rated 4.8 stars out of 5 by 12,345 users",
    "Model number SM-G991B works",
    "Serial 5CD1234XYZ on the sticker",
    "Part no. 04-1234-5678 ships tomorrow",
    "Invoice INV-2024-000123 paid",
    "Ticket JIRA-4521 is blocked",
    "PR #12345 was merged",
    "commit a1b2c3d4e5f6 reverted",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "UUID 550e8400-e29b-41d4-a716-446655440000 in the logs",
    "HTTP 404 then HTTP 503",
    "Port 5432 is Postgres, 6379 is Redis",
    "Set TTL to 86400 seconds",
    "Use 0.0.0.0 only in containers",
    "The regex ^\\d{3}$ matches three digits",
    "1 + 1 = 2, 2 * 3 = 6",
    "ratio 4:3 vs 16:10",
    "the years 1914-1918 and 1939-1945",
    "Top 10 movies of 2023",
    "iOS 17.4.1 broke my alarms",
    "Windows 11 23H2 update",
    "GPT-4 and Llama-3-70B compared",
    "RTX 4090 draws 450W",
    "a 1.5L bottle for 0.99",
    "Keep 2m distance please",
    "Episode 1x04 spoilers ahead",
    "Vol. 3 No. 12 of the journal",
    "ISBN-13: 978-0-306-40615-7",
    "ISSN 0317-8471",
    "DOI 10.1000/182 explains it",
    "arXiv:2106.09685 is the LoRA paper",
    "The e.g. and i.e. confusion again",
    "U.S.A. vs U.K. in the final",
    "Ph.D. students, rejoice",
    "Dr. Who season 14",
    "St. Patrick's Day parade at noon",
    "Mt. Everest is 8,849 m",
    "It's 5 o'clock somewhere",
    "top.secret was the folder name lol",
    "home.sweet.home is my vibe",
    "gg.wp everyone",
    "the code golf answer is 42 bytes",
    "temperature -3.5C and wind 20 km/h",
    "BMI 22.5, resting HR 58",
    "Blood type O+ is common",
    "Size 10.5 shoes, US",
    "a 30% tip on $45.60",
    "Q2 2024 earnings call at 4:30pm ET",
    "Level 99 reached after 1,234 hours",
    "Flight UA 901 SFO-FRA",
    "He scored 3 goals in 12 minutes",
]
