-- Internal notes are messages for colleagues only.
ALTER TABLE messages DROP CONSTRAINT messages_author_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_author_kind_check
    CHECK (author_kind IN ('customer', 'agent', 'note', 'system'));
