# The two commands of the quick start. Everything else lives in scripts/.
.PHONY: demo demo-8k test fmt

## demo: the operator scales a class up before its start on a local cluster with a real node;
## 2,000 students come in through the gateway, and the class drains after (needs root)
demo:
	scripts/demo-cluster

## demo-8k: the data plane alone: 8,000 students through Caddy, three socket servers and Redis
demo-8k:
	scripts/demo

## test: formatting, lints, generated files and every test, against real Redis, Caddy and Kubernetes
test:
	scripts/test

fmt:
	cargo fmt --all
