module example.com/hephy-sample

go 1.19
