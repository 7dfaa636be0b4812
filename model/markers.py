"""The recognisable devices of effusiveness, found as character spans.

Markers explain a score to an analyst; they never set it (the model does). Each kind is a list of patterns matched
case-insensitively on word boundaries; overlapping hits of one kind keep the longest.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

MARKER_KINDS: dict[str, str] = {
    "friendship": "friendship references",
    "superlative": "superlatives and intensifiers",
    "personal_praise": "personal praise of the leader",
    "shared_history": "shared history and comradeship",
    "wishes": "wishes",
    "commitment": "commitments",
    "cooperation": "cooperation references",
}

_PATTERNS: dict[str, list[str]] = {
    "friendship": [
        r"friend(?:ship|ships|ly|s)?",
        r"fraternal(?:ly)?",
        r"brother(?:ly|hood|s)?",
        r"sister(?:ly)?",
        r"kindred",
        r"comrades?(?:hip|ly)?",
        r"dear(?:est)? (?:friend|brother|comrade)s?",
        r"hermanos?",
        r"(?:close|trusted|reliable|true) (?:friend|partner|ally|allies)s?",
        r"all-weather",
        r"iron brothers?",
        r"(?:pacific|our) family",
        r"vuvale",
        r"good[- ]neighbou?rl(?:y|iness)",
        r"solidarity",
    ],
    "superlative": [
        r"warmest",
        r"most (?:sincere|heartfelt|cordial|respected|beloved|esteemed|profound|fervent|warm|important)",
        r"heartfelt",
        r"deepest",
        r"highest",
        r"(?:in|un)vincible",
        r"unbreakable",
        r"unshakab?le",
        r"indestructible",
        r"everlasting",
        r"eternal(?:ly)?",
        r"boundless",
        r"peerless",
        r"unwavering",
        r"immense(?:ly)?",
        r"profound(?:ly)?",
        r"truly",
        r"exceptional(?:ly)?",
        r"extraordinar(?:y|ily)",
        r"unprecedented",
        r"utmost",
        r"greatest",
        r"best",
        r"from the bottom of (?:my|our) hearts?",
        r"with all (?:my|our) hearts?",
        r"no force (?:on earth )?(?:can|could|will) ever",
    ],
    "personal_praise": [
        r"(?:your|his|her) (?:wise|able|far-sighted|visionary|outstanding|brilliant|seasoned|wise and far-sighted|"
        r"distinguished|personal|tireless|steadfast|courageous|remarkable|great) "
        r"(?:leadership|guidance|contribution|efforts|role|wisdom|statesmanship|attention|care)",
        r"under (?:your|his|her) (?:\w+ )?(?:leadership|guidance)",
        r"you personally",
        r"your (?:excellency's )?personal (?:friendship|commitment|role|contribution|attention|efforts)",
        r"(?:respected|esteemed|beloved|revered) (?:comrade|leader|brother|friend|president|chairman|majesty|highness)",
        r"far-sighted",
        r"statesman(?:ship)?",
        r"(?:great|outstanding|wise) leader",
        r"wisdom",
    ],
    "shared_history": [
        r"(?:forged|sealed|tested|tempered|cemented) (?:in|by|through|over)",
        r"time-(?:tested|honou?red)",
        r"(?:side by side|shoulder to shoulder|hand in hand)",
        r"older generations?(?: of (?:leaders|revolutionaries))?",
        r"(?:common|shared|joint) (?:struggle|history|past|heritage|sacrifices?|victory|fight)",
        r"(?:long|proud|glorious|rich) (?:history|tradition|traditions)",
        r"centur(?:y|ies)-old",
        r"historic(?:al)? (?:ties|bonds|friendship|links|relations)",
        r"(?:war|struggle) (?:of|for) (?:national )?(?:liberation|independence)",
        r"same trench",
        r"generations? to come",
        r"never forget",
    ],
    "wishes": [
        r"(?:I|we) (?:sincerely |heartily |cordially |also )?wish (?:you|your|the)",
        r"(?:best|good|warm|sincere|heartfelt) wishes",
        r"good health",
        r"long life",
        r"happiness",
        r"well-being",
        r"prosperity",
        r"(?:every|continued|great|further|new) success(?:es)?",
        r"may (?:god|allah|the almighty)",
        r"pray(?:er|ers)? (?:for|to)",
        r"happy new year",
    ],
    "commitment": [
        r"(?:stand|am|are|remain) ready to",
        r"(?:firmly )?(?:determined|committed|resolved) to",
        r"will (?:continue to|work|spare no effort|strive|deepen|strengthen|further|always)",
        r"spare no effort",
        r"look forward to",
        r"(?:together|jointly) (?:we|with you)",
        r"work (?:closely |together )?with you",
        r"(?:take|raise|elevate|bring) (?:our|bilateral|the) (?:\w+ )?(?:relations|ties|partnership|cooperation) to",
        r"new (?:chapter|heights|level|stage|era)",
    ],
    "cooperation": [
        r"co-?operation",
        r"co-?operate",
        r"partnership",
        r"mutually beneficial",
        r"win-win",
        r"strategic communication",
    ],
}

_COMPILED = {
    kind: re.compile(r"(?<![\w-])(?:" + "|".join(patterns) + r")(?![\w-])", re.IGNORECASE)
    for kind, patterns in _PATTERNS.items()
}


@dataclass(frozen=True)
class Marker:
    kind: str
    start: int
    end: int
    text: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def find_markers(text: str) -> list[Marker]:
    """Every marker in ``text``, ordered by position.

    >>> [(m.kind, m.text) for m in find_markers("Our unbreakable friendship")]
    [('superlative', 'unbreakable'), ('friendship', 'friendship')]
    """
    found = [
        Marker(kind, match.start(), match.end(), match.group())
        for kind, pattern in _COMPILED.items()
        for match in pattern.finditer(text)
    ]
    return sorted(found, key=lambda m: (m.start, m.kind))


def count_markers(markers: list[Marker]) -> dict[str, int]:
    """Markers counted per kind, every kind present (zero where none)."""
    counts = Counter(m.kind for m in markers)
    return {kind: counts.get(kind, 0) for kind in MARKER_KINDS}
