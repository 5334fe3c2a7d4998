-- Seed data for the example schema (run as a superuser, which bypasses RLS).
-- People: Jane (L9nqAzQZ), Bob (DQ2b7wmV). Accounts: Acme (wZmNw7Q2), Globex (y9gE3kWj).
-- Jane is admin in Acme and viewer in Globex; Bob is admin in Globex.
INSERT INTO account_roles VALUES
    ('wZmNw7Q2', 'L9nqAzQZ', 'admin'),
    ('y9gE3kWj', 'L9nqAzQZ', 'viewer'),
    ('y9gE3kWj', 'DQ2b7wmV', 'admin');
INSERT INTO todos (user_id, title) VALUES
    ('L9nqAzQZ', 'Jane: renew passport'),
    ('L9nqAzQZ', 'Jane: book dentist'),
    ('DQ2b7wmV', 'Bob: file expenses');
INSERT INTO documents (account_uid, created_by_person_uid, last_edited_by_person_uid, title) VALUES
    ('wZmNw7Q2', 'L9nqAzQZ', 'L9nqAzQZ', 'Acme roadmap'),
    ('y9gE3kWj', 'DQ2b7wmV', 'DQ2b7wmV', 'Globex budget'),
    ('y9gE3kWj', 'DQ2b7wmV', 'DQ2b7wmV', 'Globex hiring plan');
INSERT INTO reports (account_uid, title) VALUES
    ('wZmNw7Q2', 'Acme quarterly report'),
    ('y9gE3kWj', 'Globex quarterly report');
