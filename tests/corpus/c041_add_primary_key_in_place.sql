ALTER TABLE legacy_payments ADD PRIMARY KEY (id);
