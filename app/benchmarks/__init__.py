"""Benchmarks: a prompt set repeated against one or several models, stored under a name, and
two runs compared ("did the driver update make it slower?"). ``prompts`` reads prompt sets,
``runner`` runs them with the prompt test's meter, ``records`` stores them, ``stats`` gives
medians, spreads and the verdict on differences, ``cli`` is ``main.py bench``."""
