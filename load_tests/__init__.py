"""Load tests: scenarios run against real livesell processes on loopback (`make bench`)."""
