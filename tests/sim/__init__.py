"""Tests of the AMI simulator (app/sim/), one file per module of it."""
