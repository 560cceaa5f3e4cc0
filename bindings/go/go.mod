module github.com/evroute/evroute/bindings/go

go 1.22
