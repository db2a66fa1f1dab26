"""Usage, trends and energy across sessions: "what did I run, and did it get slower?".

``rollup`` keeps 15-minute totals per server and model (requests, tokens, errors, busy time,
energy) in the database; ``report`` answers a range grouped by hour, day or week from them;
``trends`` gives each model's daily speed figures with the changes (model digest, server
version, GPU driver) that may explain a jump; ``energy`` turns power and energy samples into
joules per request.
"""
