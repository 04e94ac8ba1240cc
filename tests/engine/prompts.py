"""Prompts of many lengths, raw and chat-templated, for the parity tests."""

RAW_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
    "List three primary colors:",
    "The quick brown fox",
    "import numpy as np\n\n# compute the mean of an array\n",
    "Water boils at a temperature of",
    "In 1969, the first humans",
    (
        "The following is a detailed report on the history of computing. It begins with the "
        "abacus, moves through mechanical calculators such as Pascal's and Leibniz's machines, "
        "covers Babbage's analytical engine and Ada Lovelace's notes, the electromechanical "
        "relays of the 1930s, the first electronic computers of the 1940s, the invention of "
        "the transistor, the integrated circuit, and the microprocessor. The report concludes"
    ),
    "Q: What is the largest planet in the solar system?\nA:",
    "A haiku about autumn:\n",
    "1, 2, 3, 4, 5,",
]

CHAT_QUESTIONS = [
    "What is 2 + 2?",
    "Name a famous painting by Leonardo da Vinci.",
    "Explain in one sentence what a CPU does.",
    "Give me a synonym for 'happy'.",
]

SYSTEM_PROMPT = (
    "You are a meticulous assistant working for a library. You answer briefly, you never make "
    "up facts, you cite the shelf number when you know it, and you always stay polite. The "
    "library opens at nine in the morning and closes at six in the evening, except on Sundays "
    "when it is closed all day. Members may borrow up to five books for three weeks."
)
