"""Benchmarks: data preparation (bench/data_prep.py) and alignflow's trainers against TRL's (`alignflow bench`,
bench/trainers.py). TRL is only needed here (the `bench` extra)."""
