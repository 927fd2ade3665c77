-- archive 2023 events
ALTER TABLE events DETACH PARTITION events_2023;
