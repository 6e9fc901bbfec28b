"""Personal-data battery A (written before tuning the recognizers against it): 10 kinds, several formats
each, placed in text, replies, alt text and nested meta; plus tricky benign sentences."""

from __future__ import annotations

import itertools
import random

from ximgctx.governance.pii import luhn_ok

TEMPLATES = [
    "Contact me at {} if you still want the tickets.",
    "my old one was {} but I never check it",
    "{} is where the photos are",
    "Thanks so much, reach out anytime: {}",
    "lol she really posted {} again",
    "for details see {}.",
    "omg ({}) that was wild",
    "DM me or use {}, whatever works",
]


def _luhn(prefix: str, rng: random.Random, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _iban(rng: random.Random, country: str, bban_len: int) -> str:
    letters = {"GB": 4, "NL": 4}.get(country, 0)  # GB and NL BBANs start with a 4-letter bank code
    bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
    bban += "".join(str(rng.randrange(10)) for _ in range(bban_len - letters))
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.5 else raw


def items(seed: int = 1) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    first = ["jane", "john", "maria", "wei", "ahmed", "olga", "sam", "priya", "lucas", "emma", "josé", "zoë"]
    last = ["doe", "smith", "garcia", "chen", "khan", "ivanova", "lee", "patel", "silva", "brown"]
    out: list[tuple[str, str]] = []
    for _ in range(40):
        f, la = rng.choice(first), rng.choice(last)
        d = rng.choice(
            ["example.com", "gmail.com", "mail.co.uk", "uni.edu", "web.de", "proton.me", "correo.es"]
        )
        host, tld = d.split(".", 1)
        out.append(("email", rng.choice([
            f"{f}.{la}@{d}", f"{f}{rng.randrange(100)}@{d}", f"{f}_{la}+news@{d}",
            f"{f} dot {la} at {host} dot {tld.replace('.', ' dot ')}", f"{f}[at]{host}[.]{tld}",
            f"{f}(at){host}(dot){tld}", "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in f"{f}@{d}"),
            f"{f}@bücher.de",
        ])))  # fmt: skip
    for _ in range(45):
        a, b, c = rng.choice([212, 415, 617, 303, 512, 206]), rng.randrange(200, 999), rng.randrange(10000)
        out.append(("phone", rng.choice([
            f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
            f"1-{a}-{b}-{c:04d}", f"+44 20 7946 {c:04d}", f"0044 20 7946 {c:04d}", f"020 7946 {c:04d}",
            f"+49 30 {rng.randrange(1000000, 9999999)}", f"030 {rng.randrange(1000000, 9999999)}",
            f"+33 6 12 34 {c // 100:02d} {c % 100:02d}", f"06 12 34 {c // 100:02d} {c % 100:02d}",
            f"+91 98{rng.randrange(100, 999)} {rng.randrange(10000, 99999)}",
        ])))  # fmt: skip
    for _ in range(40):
        name = rng.choice(first) + rng.choice(["", "_", "x"]) + rng.choice(last) + str(rng.randrange(100))
        out.append(("handle", rng.choice([
            f"@{name}", f"＠{name}", f"u/{name}", f"/u/{name}", f"@{name}.bsky.social", f"@{name}@mastodon.social",
            "@Дмитрий_" + str(rng.randrange(99)), "@مريم" + str(rng.randrange(99)),
        ])))  # fmt: skip
    for _ in range(40):
        host = rng.choice(
            [
                "example.com",
                "news.site.org",
                "bit.ly",
                "my-blog.net",
                "shop.co.uk",
                "cool.store",
                "art.gallery",
            ]
        )
        path = rng.choice(["", "/", "/path/to/page", "/watch?v=dQw4w9WgXcQ", "/a/b-c_d.html"])
        h, _, t = host.rpartition(".")
        out.append(("url", rng.choice([
            f"https://{host}{path}", f"http://www.{host}{path}", f"www.{host}{path}", f"{host}{path or '/x'}",
            f"hxxp://{h}[.]{t}{path}", f"hxxps://{host}{path}", f"{h}[.]{t}/x",
        ])))  # fmt: skip
    return _numbers(rng, out)


def _numbers(rng: random.Random, out: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Cards, IBANs, SSNs, IPs, crypto addresses and street addresses, then the templates."""
    for _ in range(30):
        n = _luhn(rng.choice(["4", "51", "37", "6011"]), rng, 16)
        out.append(("card", rng.choice([n, " ".join(n[i:i + 4] for i in range(0, 16, 4)),
                                        "-".join(n[i:i + 4] for i in range(0, 16, 4)), ".".join(n[i:i + 4] for i in range(0, 16, 4))])))  # fmt: skip
    for _ in range(25):
        out.append(
            ("iban", _iban(rng, *rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)])))
        )
    for _ in range(25):
        a, g, s = rng.randrange(100, 665), rng.randrange(10, 99), rng.randrange(1000, 9999)
        out.append(
            ("ssn", rng.choice([f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}{g}{s}"]))
        )  # bare digits: written after "SSN"
    for _ in range(25):
        out.append(("ip", rng.choice([
            f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}",
            f"fe80::{rng.randrange(65536):x}:{rng.randrange(65536):x}:{rng.randrange(65536):x}:{rng.randrange(65536):x}",
        ])))  # fmt: skip
    for _ in range(20):
        out.append(("crypto", rng.choice([
            "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "0x" + "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(40)),
        ])))  # fmt: skip
    for _ in range(25):
        num = rng.randrange(1, 9999)
        out.append(("address", rng.choice([
            f"{num} {rng.choice(['Maple', 'Oak', 'Elm', 'Cedar'])} "
            f"{rng.choice(['Street', 'Avenue', 'Rd', 'Blvd', 'Lane'])}",
            f"{num} N {rng.choice(['Main', 'Park'])} St, Apt {rng.randrange(1, 20)}",
            f"{rng.choice(['Haupt', 'Berliner ', 'Goethe'])}straße {rng.randrange(1, 200)}",
            f"{rng.randrange(1, 200)} rue de {rng.choice(['Rivoli', 'la Paix', 'Lyon'])}",
            f"{num}B Baker Street",
        ])))  # fmt: skip
    cycle = itertools.cycle(TEMPLATES)
    return [
        (k, v, t.replace("{}", "SSN {}") if k == "ssn" and v.isdigit() else t)
        for (k, v), t in zip(out, cycle, strict=False)
    ]


BENIGN = [
    "In 2019 we paid $1,299.99 for three tickets and it was worth it.",
    "The meeting moved to 10:30 on 2023-05-01, see you there!",
    "She scored 4.5/5 on the quiz, e.g. better than last year.",
    "Mr. Smith said the U.S. team won 3-1 in the 90th minute.",
    "The file.txt is only 3.14 MB, node.js handles it fine.",
    "We drove 1,200 miles on Route 66 back in the 1990s.",
    "Open 24/7, prices from 9.99 to 19.99 EUR.",
    "COVID-19 cases fell 12% in Q3, i.e. about 4,500 people.",
    "Population 8,336,817 and growing; founded in 1624.",
    "Version 2.10.3 fixed the bug from issue #4521.",
    "I'm @ home, call me later lol",
    "Flight 1234 leaves gate 17 at 18:45, seat 23C.",
    "3 cats, 2 dogs and 1 very confused parrot.",
    "That's 50% off, down from $80 to $40!!!",
    "Temperature hit 104.5F at 3pm yesterday.",
    "The score was 21-14 at halftime, final 35-28.",
    "Grade 10 students read pages 120-145 for Monday.",
    "home.it was late and yes.no one noticed",
    "Order 12345 shipped in 2 boxes weighing 3.5 kg.",
    "We rewrote it in ASP.NET and then moved to Socket.IO.",
    "Vue.JS or React? Next.js 14.2 is out.",
    "The summit is at 46.8523, -121.7603 if you want to hike.",
    "Tracking number 1Z999AA10123456784 says it is out for delivery.",
    "USPS tracking 9400 1000 0000 0000 0000 00, arriving Tuesday.",
    "ISBN 978-3-16-148410-0 is the second edition.",
    "Upgrade to v1.2.3.4 before Friday, the changelog is long.",
    "Rename report_final.pdf to report_v2.pdf please.",
    "main.py imports utils.sh? no, it calls setup.cfg.",
    "std::vector<int> beats a raw array, fight me",
    "The ratio is 16:9 and the timecode 01:02:03:04.",
    "join us at main street on friday",
    "Meet me @10pm by the fountain",
    "My cat weighs 4.2kg, which is 9.26 lbs.",
    "Chapter 11, verse 4:12 says it plainly.",
    "The stock closed at 142.55, up 3.2%.",
    "We sold 1,234,567 units in 2022 alone.",
    "Windows 10.0.19045 finally updated itself.",
    "Room 404 on floor 4, building B.",
    "He ran 5 miles down the road this morning.",
    "World Cup 2026 starts on 06/11/2026 in three countries.",
    "My PIN is not something I would post, nice try.",
    "Call of Duty 4 is still the best one.",
    "The password policy requires 12 characters.",
    "At 3.5 stars it is fine, not great.",
    "Section 230 is in the news again.",
    "Apollo 11 landed in 1969 at 20:17 UTC.",
    "The recipe needs 2 cups flour and 1.5 tsp salt.",
    "A 4K TV at 120Hz for 499 dollars.",
    "Bus 42 to Central Station every 15 minutes.",
    "Her PhD thesis is 312 pages long.",
    "Season 3 episode 7 was the best one.",
    "Python 3.11.4 and numpy 1.26.0 work together.",
    "The kernel 6.5.0-14-generic panicked twice.",
    "The hex color #1DA1F2 is Twitter blue.",
    "git commit 3f2a9c1 broke the build.",
    "UUID 123e4567-e89b-12d3-a456-426614174000 is a test value.",
    "Error 0x80070005 means access denied.",
    "Listen on port 8080, not 80.",
    "The bill H.R. 3076 passed the House.",
    "It costs £12.50 or €14.99 depending on where.",
    "1 in 3 people prefer tea, says the survey.",
    "Vitamin D3 2000 IU daily is common.",
    "The Boeing 737-800 seats about 189.",
    "The code is in src/app/main.rs and Cargo.toml.",
    "Use the .env file, not config.yaml.",
    "The year 2024 had 366 days.",
    "Studio apartment, 450 sq ft, 2nd floor.",
    "Mix 1:1 water and vinegar.",
    "She was born in the 80s and grew up in the 90s.",
    "Score 98.6 on the exam, top 5%.",
    "We are team #3 in the bracket.",
    "Elevation 5,280 ft in Denver.",
    "Protocol TLS 1.3 and HTTP/2 are required.",
    "The 405 freeway was jammed at 5:45.",
    "My bib number at the marathon was 31415.",
    "Episode IV came out in 1977.",
    "Batch 2023-11-B failed QA.",
    "Lot size 0.25 acres, zoned R-1.",
    "See figure 3.2 and table 4.1 in the appendix.",
    "Interstate 95 runs from Maine to Florida.",
    "The dose is 0.5 mg twice daily.",
    "Model T-800 from the movie, obviously.",
    "Group chat was chaos at 2am lol",
    "Price per share $3,450.75 on Monday.",
    "I rated it 10/10 would watch again.",
    "Highway 1 along the coast is stunning.",
    "The PS5 sold 50 million units.",
    "Order #A-99812 will ship soon.",
    "He wore jersey 23 for the Bulls.",
    "Bake at 350F for 25-30 minutes.",
    "a.k.a. the best pizza in town",
    "We hit 1M followers today!!",
    "The ratio of 3.14159 to 2.71828 is about 1.156.",
    "Gate B12, boarding group 3.",
    "My score on wordle: 3/6 today.",
    "5G towers are just cell towers.",
    "The iPhone 15 Pro costs 999.",
    "Chapter 7 bankruptcy explained in 60 seconds.",
    "My flight AA 2291 got delayed by 2h.",
    "Open the doc at docs/index.md for the overview.",
    "Read RFC 5322 before writing an email parser.",
    "Latitude 51.5074 N, longitude 0.1278 W.",
]
