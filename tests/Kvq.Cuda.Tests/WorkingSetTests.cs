using Kvq.Cuda.Offload;

namespace Kvq.Cuda.Tests;

/// <summary>The host tier's device slots per (layer, KV head) (Offload/WorkingSet): least recently used eviction and
/// the prefetched-and-unread mark the hit counters rest on. Host only.</summary>
public class WorkingSetTests
{
    [Fact]
    public void EvictsTheLeastRecentlyUsedAndTracksPrefetches()
    {
        var ws = new WorkingSet(3, 50);
        Assert.Equal(-1, ws.SlotOf(7));
        int a = ws.Take(7, prefetch: false), b = ws.Take(11, prefetch: true), c = ws.Take(13, prefetch: false);
        Assert.Equal(3, new[] { a, b, c }.Distinct().Count());
        Assert.Equal(b, ws.SlotOf(11));
        Assert.False(ws.Touch(a, read: true));        // 7 now most recent: order 11, 13, 7
        Assert.True(ws.Touch(b, read: false));        // a prediction touching it keeps the mark: order 13, 7, 11
        Assert.True(ws.Touch(b, read: true));         // the first real read reports it, then clears it
        Assert.False(ws.Touch(b, read: true));
        int d = ws.Take(29, prefetch: false);         // evicts 13, the least recent
        Assert.Equal(c, d);
        Assert.Equal(-1, ws.SlotOf(13));
        Assert.Equal(d, ws.SlotOf(29));
        int e = ws.Take(31, prefetch: true);          // then 7
        Assert.Equal(a, e);
        Assert.Equal(-1, ws.SlotOf(7));
        Assert.True(ws.Touch(e, read: true));
    }

    [Fact]
    public void RandomTouchesAndTakesAgreeWithAReferenceList()
    {
        var rng = new Random(3);
        const int slots = 5, blocks = 40;
        var ws = new WorkingSet(slots, blocks);
        var lru = new List<int>();                    // reference: blocks held, least recent first
        for (int i = 0; i < 2000; i++)
        {
            int block = rng.Next(blocks);
            int s = ws.SlotOf(block);
            Assert.Equal(lru.Contains(block), s >= 0);
            if (s >= 0) ws.Touch(s, read: true);
            else
            {
                if (lru.Count == slots) lru.RemoveAt(0);
                ws.Take(block, prefetch: rng.Next(2) == 0);
            }
            lru.Remove(block);
            lru.Add(block);
        }
        foreach (int b in lru) Assert.True(ws.SlotOf(b) >= 0);
        Assert.Equal(slots, Enumerable.Range(0, blocks).Count(b => ws.SlotOf(b) >= 0));
    }
}
