# The two commands of the quick start. Everything else lives in scripts/.
.PHONY: demo test fmt

## demo: a live class of 8,000 students through Caddy, three socket servers and Redis
demo:
	scripts/demo

## test: formatting, lints, generated files and every test, against real Redis, Caddy and Kubernetes
test:
	scripts/test

fmt:
	cargo fmt --all
