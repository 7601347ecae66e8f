"""Prompt constants shared by the math500 task and the ``tts`` model.

``SYSTEM_PROMPT`` is the published evaluation prompt of the Llama 3.2 / search-and-learn setup: it asks
for "## Step k:" steps separated by blank lines (the step delimiter) and a final ``$\\boxed{...}$``.
The math500 task YAML carries the same text as its ``description`` (a test checks they agree).
"""

SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\n"
    "Provide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\n"
    "Use this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)

# lm-eval joins the task description and the problem text with this when no chat template is used.
DESCRIPTION_SEPARATOR = "\n\n"
