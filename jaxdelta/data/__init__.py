"""Datasets for fine-tuning: local file readers, chat formatting with assistant-only loss masks, and
deterministic length-bucketed batches split across micro-batches and processes."""

from jaxdelta.data.batching import Batch, SFTBatches
from jaxdelta.data.chat import SFTExample, llama2_prompt_text, tokenize_chat, tokenize_conversations
from jaxdelta.data.files import (
    DataError,
    instruction_to_chat,
    read_behaviors,
    read_chats,
    read_conversations,
    read_instructions,
    read_text,
)

__all__ = [
    "Batch", "SFTBatches", "SFTExample", "llama2_prompt_text", "tokenize_chat", "tokenize_conversations",
    "DataError", "instruction_to_chat", "read_behaviors", "read_chats", "read_conversations",
    "read_instructions", "read_text",
]
