"""The pieces data/generate.py composes into the task's data. Each module says what it holds; they build
on each other in this order, and none imports generate.py:

    settings     the numbers that shape the data (how often a field is missing, ... and TODAY)
    vocab        vocab(): reads the word tables in data/vocab/*.json
    spelling     how a value is written in a text (dates, ages, e-mails, accents) and read back
    people       the pools (names, cities, e-mail parts, jobs, relatives), their train/eval split, make_person
    distractors  true facts about something else that a text may carry
    draft        the phrasings, and Draft: one text being written from one person
    frames       the kinds of text (e-mail, chat, form, CSV, ...), each writing a whole text from a draft
    prose        plain paragraphs for continued pre-training
    describe     the second task's answer: one sentence stating a record's facts

generate.py puts its own folder (data/) on sys.path, so these import as `generator.<module>`.
"""
