# Puntos: build, run and test on one machine.
#
# `make test` and `make run` start what they need first (deploy/local/services.sh up):
# PostgreSQL and ClickHouse on 127.0.0.1, installed from Debian's packages when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Go lives in /usr/local/go/bin on our machines; use it when go is not on PATH already.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif

SERVICES := deploy/local/services.sh
LOAD_ENV := eval "$$($(SERVICES) env)"
BIN      := bin/puntos
# The version `puntos version` and the start-up log print: the commit, marked
# -dirty when the checkout has changes (dev outside a git checkout).
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: services services-down build run test bench demo fmt vet clean

## services: start PostgreSQL and ClickHouse (reusing what already runs)
services:
	$(SERVICES) up

## services-down: stop what `make services` started
services-down:
	$(SERVICES) down

## build: compile bin/puntos
build:
	go build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/puntos

## run: start the services, then run Puntos against them
run: services build
	$(LOAD_ENV); exec $(BIN) run

## test: start the services, then run every test against them
test: services
	$(SERVICES) test-tools
	$(LOAD_ENV); go test -count=1 -p 2 -timeout 20m ./...

## bench: each Go benchmark once, the load generator, then bench/floor (docs/benchmarks.md)
bench: services
	$(LOAD_ENV); bench/gobench.sh
	$(LOAD_ENV); go run ./bench/loadgen -out bench/results $(BENCH_FLAGS)
	$(LOAD_ENV); go run ./bench/floor -out bench/results $(FLOOR_FLAGS)

## demo: start the services, then run the demo
demo: services build
	$(LOAD_ENV); $(BIN) demo

## fmt: format the Go code in place
fmt:
	gofmt -l -w .

## vet: go vet every package
vet:
	go vet ./...

## soap-gen: regenerate gateway/soap/gen from contracts/puntos.wsdl with gowsdl
.PHONY: soap-gen
soap-gen:
	gateway/soap/gen.sh

## clean: remove built binaries (the services' data in .data/ stays; see services-down)
clean:
	rm -rf bin/
