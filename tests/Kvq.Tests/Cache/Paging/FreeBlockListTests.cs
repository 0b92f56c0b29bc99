using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

public class FreeBlockListTests
{
    [Fact]
    public void PushFrontPushBackPopAndRemove_KeepOrder()
    {
        var list = new FreeBlockList(6);
        list.PushBack(1);
        list.PushBack(2);
        list.PushFront(0);
        list.PushBack(5);
        list.Remove(2);
        Assert.Equal(new[] { 0, 1, 5 }, Forward(list));
        Assert.Equal(new[] { 5, 1, 0 }, Backward(list));
        Assert.Equal(0, list.PopFront());
        Assert.Equal(2, list.Count);
        Assert.True(list.Contains(1));
        Assert.False(list.Contains(2));
    }

    [Fact]
    public void Misuse_Throws()
    {
        var list = new FreeBlockList(3);
        Assert.Throws<InvalidOperationException>(() => list.PopFront());
        list.PushBack(1);
        Assert.Throws<InvalidOperationException>(() => list.PushFront(1));
        Assert.Throws<InvalidOperationException>(() => list.Remove(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => list.PushBack(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => list.PushBack(-1));
    }

    [Theory]
    [InlineData(1, 11)]
    [InlineData(7, 12)]
    [InlineData(64, 13)]
    public void RandomOperations_MatchPlainList(int capacity, int seed)
    {
        var rng = new Random(seed);
        var list = new FreeBlockList(capacity);
        var model = new List<int>();
        for (int step = 0; step < 3000; step++)
        {
            int id = rng.Next(capacity);
            switch (rng.Next(4))
            {
                case 0 when !model.Contains(id): list.PushFront(id); model.Insert(0, id); break;
                case 1 when !model.Contains(id): list.PushBack(id); model.Add(id); break;
                case 2 when model.Count > 0: Assert.Equal(model[0], list.PopFront()); model.RemoveAt(0); break;
                case 3 when model.Contains(id): list.Remove(id); model.Remove(id); break;
            }
            Assert.Equal(model, Forward(list));
            var back = Backward(list);
            back.Reverse();
            Assert.Equal(model, back);
            Assert.Equal(model.Count, list.Count);
        }
    }

    internal static List<int> Forward(FreeBlockList list)
    {
        var ids = new List<int>();
        for (int id = list.First; id >= 0; id = list.Next(id))
        {
            ids.Add(id);
            Assert.True(ids.Count <= list.Count, "forward walk longer than Count: broken links");
        }
        return ids;
    }

    internal static List<int> Backward(FreeBlockList list)
    {
        var ids = new List<int>();
        for (int id = list.Last; id >= 0; id = list.Previous(id))
        {
            ids.Add(id);
            Assert.True(ids.Count <= list.Count, "backward walk longer than Count: broken links");
        }
        return ids;
    }
}
