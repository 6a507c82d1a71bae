module musterbench/errgroup

go 1.19
