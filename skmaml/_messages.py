"""Counting words in messages: "1 row" / "2 rows", "1 task is" / "3 tasks are"."""


def counted(n, noun):
    """``n`` and ``noun``, in the plural unless ``n`` is 1: "1 row", "2 rows", "3 classes"."""
    n = int(n)
    return f"{n} {noun if n == 1 else noun + ('es' if noun.endswith('s') else 's')}"


def counted_are(n, noun):
    """:func:`counted` with its verb: "1 task is", "3 tasks are"."""
    return f"{counted(n, noun)} {'is' if int(n) == 1 else 'are'}"
