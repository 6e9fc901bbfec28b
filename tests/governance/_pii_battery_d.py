# ruff: noqa: E501  (generated values written inline)
"""Personal-data battery D, written after every recognizer change of issue 24 and scored once before any
change it could prompt: formats, hosts, names, templates and benign sentences not used by A-C or by the
cases the recognizers were tuned on (test_pii_scripts). Phone numbers are phonenumbers' own example numbers
of 24 regions, written the way people write them (international, national, with a trunk prefix)."""

from __future__ import annotations

import random

from ximgctx.governance.pii import luhn_ok

TEMPLATES = [
    "{} — that's where to find me",
    "reposting for a friend: {}",
    "if anyone has info please reach {} asap",
    "(old contact was {}, not anymore)",
    "DM'd you {} earlier",
    "{}. thx!",
    "ok so {} right?",
    "the form wanted {} and nothing else",
]
PHONE_TEMPLATES = [
    "call me on {} after 6",
    "my number: {}",
    "WhatsApp {} anytime",
    "phone {} (leave a message)",
]


def _luhn(prefix: str, rng: random.Random, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _iban(rng: random.Random, country: str, letters: int, digits: int) -> str:
    bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
    bban += "".join(str(rng.randrange(10)) for _ in range(digits))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def _phones(rng: random.Random) -> list[str]:
    import phonenumbers

    out = []
    regions = ["AU", "CA", "IE", "NZ", "ZA", "NG", "KE", "SG", "MY", "PH", "JP", "KR", "MX", "AR", "CL",
               "CO", "PE", "PT", "PL", "SE", "NO", "DK", "FI", "TR"]  # fmt: skip
    for region in regions:
        n = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        fmt = rng.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164])
        out.append(phonenumbers.format_number(n, fmt))
    return out


def items(seed: int = 2424) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    names = ["bongani", "ingrid", "kwame", "lucía", "mei", "nikolai", "priya", "siobhan", "tomás", "zeynep"]
    hosts = ["posteo.de", "laposte.net", "yahoo.co.uk", "outlook.com.br", "naver.com", "web.de", "gmx.at"]
    out: list[tuple[str, str, str]] = []
    for i in range(30):
        n, h = rng.choice(names), rng.choice(hosts)
        value = [f"{n}{i}@{h}", f"{n}.{i}@{h}", f"{n}_{i} (at) {h}", f"{n}{i}[at]{h}"][i % 4]
        out.append(("email", value, rng.choice(TEMPLATES)))
    for i, phone in enumerate(_phones(rng)):
        out.append(("phone", phone, PHONE_TEMPLATES[i % len(PHONE_TEMPLATES)]))
    cards = [_luhn("4", rng, 16), _luhn("51", rng, 16), _luhn("37", rng, 15), _luhn("6011", rng, 16)]
    for i in range(24):
        c = cards[i % 4] if i < 4 else _luhn(rng.choice(["4", "53", "34", "6011", "35"]), rng, 16)
        c = c if i % 3 == 0 else " ".join(c[j : j + 4] for j in range(0, len(c), 4))
        out.append(("card", c, rng.choice(TEMPLATES)))
    for i in range(20):
        country, letters, digits = rng.choice([("BE", 0, 12), ("PT", 0, 21), ("IE", 4, 14), ("FI", 0, 14),
                                              ("DK", 0, 14), ("CH", 0, 17), ("PL", 0, 24)])  # fmt: skip
        iban = _iban(rng, country, letters, digits)
        iban = iban if i % 2 else " ".join(iban[j : j + 4] for j in range(0, len(iban), 4))
        out.append(("iban", iban, rng.choice(TEMPLATES)))
    for _ in range(16):
        area, group, serial = rng.randint(100, 665), rng.randint(10, 99), rng.randint(1000, 9999)
        out.append(("ssn", f"{area}-{group}-{serial}", rng.choice(["SSN {}", "social security no. {}",
                                                                   "ssn: {}", "{} (my SSN)"])))  # fmt: skip
    for value, template in [
        ("JG 10 37 95 A", "NI number {}"), ("SK123456B", "national insurance: {}"),
        ("P4366918", "passport no {}"), ("X98235711", "my passport number is {}"),
        ("D12345678", "driver's license {}"), ("ZX1234567", "passport: {}"),
    ]:  # fmt: skip
        out.append(("id_number", value, template))
    for value, template in [
        ("04/07/1988", "DOB {}"), ("14 February 1992", "born on {}"), ("1979-11-30", "date of birth: {}"),
        ("July 9, 2001", "my birthday is {}"), ("3.5.1995", "geboren am {}"),
    ]:  # fmt: skip
        out.append(("dob", value, template))
    for i in range(16):
        ip = (f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
              if i % 4 else f"2a02:{rng.randrange(16**4):x}:{rng.randrange(16**4):x}::{rng.randrange(16**3):x}")  # fmt: skip
        out.append(("ip", ip, rng.choice(["my server {}", "logged in from {}", "banned IP {}", "{} again"])))
    for value in [
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "0x52908400098527886E0F7030069857D2E4169EE7",
    ]:
        out.append(("crypto", value, rng.choice(["tips: {}", "send to {}", "wallet {}"])))
    for i in range(20):
        n = rng.choice(names).replace("í", "i").replace("á", "a")
        value = [f"https://{n}.substack.com/p/post-{i}", f"www.{n}-photos.net/gallery/{i}",
                 f"http://blog.{n}.org/?p={i}", f"{n}{i}.github.io/cv", f"https://t.me/{n}_{i}"][i % 5]  # fmt: skip
        out.append(("url", value, rng.choice(TEMPLATES)))
    for i in range(20):
        n = rng.choice(names).replace("í", "i").replace("á", "a").replace("ú", "u")
        value = [f"@{n}_{i}", f"@{n}{i}@mastodon.example.social", f"u/{n}_{i}x", f"@{n}{i}.bsky.social",
                 f"@{n}.{i}x"][i % 5]  # fmt: skip
        out.append(("handle", value, rng.choice(TEMPLATES)))
    for value in ["1600 Pennsylvania Avenue NW", "742 Evergreen Terrace", "221B Baker Street",
                  "Avenida Paulista 1578", "Carrer de Mallorca 401", "Prinsengracht 263",
                  "Schillerstraße 12", "8 rue de la Paix", "Via Garibaldi 7", "12 Harcourt Road"]:  # fmt: skip
        out.append(("address", value, rng.choice(["we moved to {}", "party at {} tonight", "ship it to {}"])))
    return out


BENIGN = [
    "Firefox 124.0.2 fixed the video bug",
    "node v20.11.1 broke my build again",
    "Upgraded to iOS 17.4.1, battery seems fine",
    "Kernel 6.8.0-31 boots in 4 seconds",
    "max int is 2147483647 in Java, not in Python",
    "the EAN on the jar says 4006381333931",
    "Average was 0.8734521 over the run",
    "our office is at 51.5007, -0.1246",
    "Flight BA 283 leaves at 14:35 from gate 22",
    "Order #A-99812-7 shipped yesterday",
    "Invoice INV-2024-004417 is overdue",
    "Tracking 1Z999AA10123456784 shows delivered",
    "ISBN 978-3-16-148410-0 is the second edition",
    "arXiv:2403.01234 is worth a read",
    "doi 10.1038/s41586-020-2649-2 cited 400 times",
    "score was 3-2 after extra time (1-1 at 90')",
    "We won 105-98 in double overtime!",
    "She ran 10k in 42:17, a new PR",
    "temps from -5 to 12 °C this week",
    "Rent went from €1,150 to €1,320 a month",
    "that's ¥3,400 for one melon",
    "Population 8,336,817 as of 2022",
    "Chapter 12, verse 4 is my favourite",
    "Room 1204 on the 12th floor",
    "Page 342 of 560, almost done",
    "Season 3 episode 7 was wild",
    "2024-03-15 release notes are up",
    "meeting moved to 03/21 at 9:30",
    "the event is on 21.06.2025 in Graz",
    "Q3 revenue up 14.2% year on year",
    "Build 22631.3296 is rolling out",
    "Python 3.12.2 and pip 24.0",
    "Version 2.4.10.1 of the plugin",
    "Use port 8080 or 443 for this",
    "Set timeout=30 and retries=5",
    "my bib number is 20417",
    "Lotto numbers 4 11 23 35 42 49",
    "we need 1200 signatures by Friday",
    "The 1998 World Cup final was 3-0",
    "Call of Duty season 2 starts today",
    "text me when you land ok",
    "reach out if you need anything",
    "my email is broken lol",
    "born to run, forced to work",
    "Passport photos are the worst",
    "DOB stands for date of birth in forms",
    "I lost my driving licence test twice",
    "The NI system is confusing for newcomers",
    "Check the wiki at the top of the page",
    "see the pinned post for details",
    "tag a friend who needs this",
    "like and subscribe haha",
    "10/10 would recommend",
    "1 in 3 people agree",
    "4 out of 5 dentists",
    "24/7 support my foot",
    "Top 50 albums of 2023, thread",
    "Day 57 of learning Japanese",
    "mile 18 is where it hurts",
    "My cat is 14 and still climbs",
    "Bus 73 never comes on time",
    "Line 4 of the script fails",
    "Apollo 11 landed in 1969",
    "The M25 was jammed for 3 hours",
    "Route 66 road trip part 2",
    "I-95 closed near exit 27",
    "the A380 has 4 engines",
    "Boeing 737-800 seats 189",
    "RTX 4090 vs 4080 Super",
    "Galaxy S24 Ultra review",
    "iPhone 15 Pro Max at 1199",
    "Windows 11 23H2 update",
    "USB-C at 100W is enough",
    "5G coverage is spotty here",
    "A4 paper is 210 by 297 mm",
    "Feels like 38 degrees today",
    "rated 4.7 stars from 12,093 reviews",
    "0.5 mg twice a day, said the doctor",
    "a 1:50,000 scale map",
    "ratio is 16:9 not 4:3",
    "lat 40.7128 long -74.0060 is NYC",
    "catch the 07:42 to Leeds",
    "Gate B12, seat 23A",
    "Platform 9¾ obviously",
    "K-pop group with 7 members",
    "Studio Ghibli film from 2001",
    "I scored 1450 on the SAT",
    "GPA went from 3.2 to 3.8",
    "Zoom ID in the calendar invite",
    "The code is in the README",
    "my PIN is none of your business",
    "3 eggs, 200g flour, 1 cup milk",
    "bake at 180°C for 25 minutes",
    "step 3: tighten the 10mm bolt",
    "M8 x 1.25 thread pitch",
    "F1 race 19 of 24 this weekend",
    "Lap time 1:27.097 for pole",
    "unit 731 documentary was heavy",
    "Area 51 jokes never get old",
    "Blink-182 tour dates announced",
    "Sum 41 and 311 in one night",
    "Maroon 5 played for 90 minutes",
    "The 49ers won 34-31",
    "Catch-22 is still relevant",
    "Fahrenheit 451 re-read",
    "Ocean's 11 is on TV",
]
