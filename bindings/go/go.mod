module evroute

go 1.19
