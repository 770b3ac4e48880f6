# Draws the plot of bench/run.sh (ARG2, a PNG) from its plot.dat (ARG1).
set terminal pngcairo size 1100,460 font "sans,11"
set output ARG2
set multiplot layout 1,2 title "cometkit (examples/longpoll) against the naive server, one machine (medians of the runs)"
set logscale x
set xrange [500:200000]
set xlabel "held requests (HTTP/1.1 up to 19k; h2c beyond)"
set grid
set key top left
set ylabel "fan-out time, one broadcast to all (ms)"
set logscale y
plot ARG1 using 1:5 with linespoints lw 2 title "cometkit p50", \
     ARG1 using 1:6 with linespoints lw 2 dt 2 title "cometkit p99", \
     ARG1 using 1:7 with linespoints lw 2 title "naive p50", \
     ARG1 using 1:8 with linespoints lw 2 dt 2 title "naive p99"
unset logscale y
set ylabel "server memory per held request (KiB of RSS)"
set yrange [0:*]
set key bottom left
plot ARG1 using 1:3 with linespoints lw 2 title "cometkit", \
     ARG1 using 1:4 with linespoints lw 2 title "naive"
unset multiplot
