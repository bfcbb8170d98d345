"""Tests of tweets.py: the tweet clean-up, and the key under which near-copies of a tweet meet."""

import tweets


def test_normalize_tweet():
    assert tweets.normalize_tweet("RT @a_b: x &amp; y https://t.co/Q?x=1 @c") == "@user: x & y http @user"
    assert tweets.normalize_tweet("mail me@home.com ART RTL\n\tend") == "mail me@home.com ART RTL end"
    assert tweets.normalize_tweet("&quot;hi&quot; www.x.com", html_entities=False) == "&quot;hi&quot; http"
    assert tweets.normalize_tweet("RT @x: hi", retweets=False, mentions=False) == "RT @x: hi"


def test_near_duplicate_key():
    key = tweets.near_duplicate_key
    same = ["RT @alice: You are such a LOSER!!! 😂😂 http://t.co/aaa", "@bob @carol you are such a loser &#128514;",
            "you are Such a loser.", "you are such a loser", "  You ARE such-a loser?! www.x.com/y RT"]
    assert {key(t) for t in same} == {"youaresuchaloser"}
    assert all(key(tweets.normalize_tweet(t)) == key(t) for t in same)  # normalised copies keep their raw key
    assert len({key(t) for t in ["you are such a loser", "you are such a winner", "you are a loser", "ARTS and RTs"]}) == 4
    assert key("ART RTs") == "artrts"  # only a standalone RT is a retweet marker
    # Nothing left: a group of its own (None), never one key shared by all such tweets.
    assert key("@dave") is None and key("RT @erin: http://t.co/x 😂!!") is None
