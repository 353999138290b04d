module liveclass.local/pause

go 1.22
