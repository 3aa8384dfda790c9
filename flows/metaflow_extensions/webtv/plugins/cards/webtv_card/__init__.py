"""The flows' card type, ``@card(type="webtv")``: Metaflow's blank card, drawn once when the task ends.

Metaflow draws a card in a new process (Python, Metaflow and the flow imported again). The blank card
can be updated while a task runs, so Metaflow starts a second process at the end of every task to
refresh it; this type cannot, which saves that process per task. The components are made in the
task from what it has in memory and the page is the blank card's, so the client API and ``card get``
read it as one. Found by Metaflow as an extension because ``flows/`` is on ``sys.path`` when a flow
runs (and packaged with the code for ``--with kubernetes``).
"""

from metaflow.plugins.cards.card_modules.basic import BlankCard


class WebTVCard(BlankCard):
    type = "webtv"
    RUNTIME_UPDATABLE = False


CARDS = [WebTVCard]
