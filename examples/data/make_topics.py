"""Generate ``topics.jsonl``: the quickstart's small text-classification dataset.

Short, everyday sentences in four topics (sports, technology, food, travel), built from
hand-written sentence patterns and fillers, so the data ships with the repository, needs no
download, and is reproduced byte for byte by running this script again::

    python examples/data/make_topics.py            # writes examples/data/topics.jsonl

Each line is ``{"text": "...", "label": "<topic>"}``, the layout kadapt reads by default
(``dataset.textField: text``, ``dataset.labelField: label``). The sentence patterns of a topic
share no wording with those of the others beyond common words, so a model has to go by meaning.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

#: Examples per topic; 4 x 120 = 480 lines.
PER_TOPIC = 120
SEED = 7

TOPICS: dict[str, dict[str, list[str]]] = {
    "sports": {
        "patterns": [
            "The {team} won {score} after a late goal in the {period}.",
            "Our coach wants more {drill} before the {event} on {day}.",
            "{player} signed a three-year contract with the {team}.",
            "The referee showed a red card during the {event}.",
            "I ran my first {race} on {day} and finished in under two hours.",
            "Tickets for the {event} sold out in ten minutes.",
            "The {team} lost their captain to a knee injury for the rest of the season.",
            "She broke the national record in the {race} this morning.",
            "We watched the {event} at a pub and the crowd went wild in the {period}.",
            "After the {event}, {player} thanked the fans for their support.",
            "Practice was cancelled, so the squad did {drill} in the gym instead.",
            "The {team} need a win on {day} to stay in the league.",
        ],
        "team": ["home side", "visitors", "city club", "national team", "under-21s", "champions", "rovers"],
        "score": ["two to one", "three to nil", "on penalties", "by a single point", "in extra time"],
        "period": ["second half", "final minute", "last quarter", "overtime", "first half"],
        "drill": ["sprint drills", "passing practice", "set pieces", "defensive work", "conditioning"],
        "event": ["cup final", "derby", "semi-final", "league match", "tournament opener", "friendly"],
        "day": ["Saturday", "Sunday", "Wednesday night", "the weekend", "Friday"],
        "player": ["The striker", "Their goalkeeper", "The young winger", "The veteran defender", "The point guard"],
        "race": ["half marathon", "marathon", "trail race", "charity run", "triathlon"],
    },
    "technology": {
        "patterns": [
            "The new {device} ships with {feature} and a faster chip.",
            "My {device} keeps crashing after the latest {update}.",
            "Our team moved the {system} to the cloud last {when}.",
            "The {app} now supports {feature} on every platform.",
            "Engineers found a security flaw in the {system} and released a {update}.",
            "You can speed up the {device} by clearing the cache and turning off {feature}.",
            "The startup raised money to build {feature} for small businesses.",
            "The {app} lost all my settings when I reinstalled it.",
            "We rewrote the {system} in a newer language to cut the response time.",
            "I backed up my {device} before installing the {update}.",
            "The conference keynote showed a {device} with {feature}.",
            "Customers complained that the {app} drains the battery.",
        ],
        "device": ["phone", "laptop", "tablet", "smartwatch", "router", "graphics card", "smart speaker"],
        "feature": [
            "voice control",
            "face unlock",
            "offline mode",
            "end-to-end encryption",
            "dark mode",
            "a bigger battery",
        ],
        "update": ["software update", "firmware patch", "security patch", "operating system upgrade"],
        "system": ["billing database", "login service", "search backend", "payment system", "email server"],
        "app": ["photo app", "banking app", "messaging app", "calendar app", "password manager"],
        "when": ["month", "quarter", "year", "spring", "week"],
    },
    "food": {
        "patterns": [
            "Simmer the {ingredient} with garlic for twenty minutes before adding {extra}.",
            "This {dish} tastes even better the next day.",
            "The bakery on the corner sells the best {baked} in town.",
            "I burned the {dish} because I forgot it in the oven.",
            "Add a pinch of salt and a little {extra} to the {dish}.",
            "We tried a new {cuisine} restaurant and the {dish} was amazing.",
            "Knead the dough for ten minutes, then let the {baked} rise overnight.",
            "My grandmother's {dish} recipe uses fresh {ingredient} from the garden.",
            "The chef recommends pairing the {dish} with a glass of red wine.",
            "Roast the {ingredient} until golden and serve with {extra}.",
            "For breakfast I had {baked} with butter and jam.",
            "The {cuisine} menu has a vegetarian {dish} that everyone loved.",
        ],
        "ingredient": ["tomatoes", "onions", "lentils", "chickpeas", "mushrooms", "potatoes", "carrots"],
        "extra": ["lemon juice", "fresh basil", "a spoon of honey", "chili flakes", "grated cheese", "yogurt"],
        "dish": ["soup", "curry", "lasagna", "stew", "risotto", "pasta sauce", "pie"],
        "baked": ["sourdough bread", "croissants", "cinnamon rolls", "bagels", "scones"],
        "cuisine": ["Thai", "Ethiopian", "Italian", "Mexican", "Lebanese", "Japanese"],
    },
    "travel": {
        "patterns": [
            "Our flight to {city} was delayed by three hours.",
            "We booked a small hotel near the {sight} for the {trip}.",
            "Don't forget your passport and a {item} for the {trip}.",
            "The train from {city} to the coast takes about four hours.",
            "We rented a car and drove along the {sight} for a week.",
            "The {trip} was cheaper because we travelled in the off season.",
            "I lost my {item} at the airport in {city}.",
            "The guide showed us the old {sight} and the market.",
            "We missed the last ferry and spent the night in {city}.",
            "Pack light: a {item} and a few shirts are enough for the {trip}.",
            "The border check took an hour, but the view of the {sight} was worth it.",
            "Next summer we want to go backpacking through {city}.",
        ],
        "city": ["Lisbon", "Kyoto", "Cape Town", "Montreal", "Istanbul", "Lima", "Reykjavik"],
        "sight": ["cathedral", "harbour", "coastal road", "castle", "national park", "river front"],
        "item": ["travel adapter", "rain jacket", "suitcase", "boarding pass", "guidebook", "backpack"],
        "trip": ["honeymoon", "road trip", "business trip", "holiday", "school trip", "weekend away"],
    },
}


def sentences(topic: str, count: int, rng: random.Random) -> list[str]:
    """``count`` distinct sentences of one topic, filling each pattern's slots at random."""
    spec = TOPICS[topic]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        pattern = rng.choice(spec["patterns"])
        fills = {slot: rng.choice(values) for slot, values in spec.items() if slot != "patterns"}
        text = pattern.format(**fills)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def build(per_topic: int = PER_TOPIC, seed: int = SEED) -> list[dict[str, str]]:
    """Every example, topics interleaved in a fixed shuffled order."""
    rng = random.Random(seed)
    rows = [{"text": t, "label": topic} for topic in TOPICS for t in sentences(topic, per_topic, rng)]
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("topics.jsonl"))
    parser.add_argument("--per-topic", type=int, default=PER_TOPIC)
    args = parser.parse_args()
    rows = build(args.per_topic)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} examples to {args.out}")


if __name__ == "__main__":
    main()
