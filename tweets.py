"""Tweets: the clean-up that is usual for this data, and the near-duplicates a split must keep together.

normalize_tweet turns the HTML escapes back into characters and replaces what is near-unique
(@handles, links, the RT marker); near_duplicate_key strips a tweet down to its words, so that
retweets and quotes of one tweet meet under one key, and near_duplicate_groups joins the keys of
one tweet into a group. readers.py gives every Davidson tweet its group this way.

This module imports nothing from the rest of nanobert.
"""

import html
import re

_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"(?<!\w)@\w+")
_RETWEET = re.compile(r"(?<!\w)RT(?!\w):?")
_SPACES = re.compile(r"\s+")


def normalize_tweet(text, *, html_entities=True, mentions=True, urls=True, retweets=True):
    """Tweet clean-up as is usual for this data: &amp;->&, @someone->@user, links->http, RT dropped."""
    # The scraped tweets still carry HTML escapes (&amp; &#8220;); a model should see the characters.
    if html_entities:
        text = html.unescape(text)
    # Handles and links are near-unique strings: they teach a model nothing general, but let it
    # memorise individual users. Links first, since a URL can contain an @.
    if urls:
        text = _URL.sub("http", text)
    if mentions:
        text = _MENTION.sub("@user", text)
    if retweets:
        text = _RETWEET.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


_HTTP = re.compile(r"(?<!\w)http(?!\w)")  # the placeholder normalize_tweet leaves for a link
_NOT_WORD = re.compile(r"[\W_]+")  # punctuation, symbols, emoji, spaces


def near_duplicate_key(tweet):
    """What is left of a tweet without mentions, links, RT, HTML escapes, case, punctuation, emoji and spaces.

    Tweets with the same key are one group in a split: retweets of one tweet by other users, with
    other @mentions, or with the punctuation changed, must not be on both sides of it. None if
    nothing is left (a tweet of only mentions and links): such a tweet is a group of its own, since
    tweets that share nothing must not be lumped together.
    """
    # The key removes everything normalize_tweet replaces (links, @user, RT), so a normalised text
    # keeps the key of its raw tweet, and near-copies keep one key whether normalised or not.
    text = html.unescape(tweet)
    for pattern in (_URL, _MENTION, _RETWEET, _HTTP):
        text = pattern.sub(" ", text)
    return _NOT_WORD.sub("", text.lower()) or None


def near_duplicate_groups(texts, min_length=20):
    """Per text, the group of its near-duplicates: same near_duplicate_key, or a key that begins or
    ends another one and has at least min_length characters; None for a text alone.

    The second rule catches a retweet cut short with "…" (the start of the whole tweet) and a quote
    that adds a comment ("@user: <the tweet>" and more, or "Photo: <the tweet>"). Below min_length
    a shared start is more often a common phrase than a copy. A group is named by its first key in
    sorted order, so the names depend on the texts only, not on their order.
    """
    keys = [near_duplicate_key(text) for text in texts]
    unique = sorted({k for k in keys if k is not None})
    parent = {k: k for k in unique}

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    # In sorted order, the keys that begin with k follow k directly; reversed, those that end with it.
    for flip in (False, True):
        view = sorted((k[::-1] if flip else k, k) for k in unique)
        for j, (v, k) in enumerate(view):
            after = j + 1
            while len(k) >= min_length and after < len(view) and view[after][0].startswith(v):
                a, b = root(k), root(view[after][1])
                parent[max(a, b)] = min(a, b)
                after += 1
    return [None if k is None else root(k) for k in keys]
