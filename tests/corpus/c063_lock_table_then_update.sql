LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE;
UPDATE accounts SET balance_cents = 0 WHERE balance_cents IS NULL;
