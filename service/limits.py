"""The limits a text to score is held to, checked here for every route that scores (score, compare, messages).

That a text has words is part of its type (``service.schemas.Text``, through ``model.errors.check_text``), so an empty
one is refused while the body is read (422, naming the field). How many texts a request holds and how long each may
be are settings, checked here once the body is read (413, naming the field).
"""

from __future__ import annotations

from collections.abc import Mapping

from service.errors import TextTooLong, TooManyTexts
from service.settings import Settings


def check_texts(texts: Mapping[str, str], settings: Settings, *, count: bool = True) -> list[str]:
    """The texts, keyed by the field that holds them, if they are within the limits; in order.

    ``count`` false leaves out the limit on texts per request, for a caller that queues them ``max_texts`` at a time.

    >>> check_texts({"a": "Dear friend", "b": "We note your letter."}, Settings())
    ['Dear friend', 'We note your letter.']
    """
    if count and len(texts) > settings.max_texts:
        raise TooManyTexts(len(texts), settings.max_texts)
    for field, text in texts.items():
        if len(text) > settings.max_chars:
            raise TextTooLong(field, len(text), settings.max_chars)
    return list(texts.values())
