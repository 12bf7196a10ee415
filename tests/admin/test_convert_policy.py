"""whonix-open-admin policy explain / check cover conversions: one call per
offline profile (RESOLUTION+PROFILE at the default resolution), none for a
profile with a network (dom0 refuses those itself, 78)."""

from __future__ import annotations

from tests.admin.test_status_policy import explain, vendor_rule


def test_explain_lists_a_conversion_for_each_offline_profile_only(admin):
    data = explain(admin, "anon-whonix", "--json").json()
    calls = {d["service"] + d["argument"]: d for d in data["decisions"]}
    convert = {c for c in calls if c.startswith("whonix.ConvertInDisposable")}
    assert convert == {"whonix.ConvertInDisposable+300+offline"}
    decision = calls["whonix.ConvertInDisposable+300+offline"]
    assert (decision["result"], decision["resolved"]) == ("allow", "dom0")
    assert decision["where"] == vendor_rule(decision["rule"])
    assert decision["rule"] == "whonix.ConvertInDisposable * @anyvm @adminvm allow"


def test_explain_one_conversion_denied_by_the_users_file(admin):
    (admin.policy / "30-user-whonix-open.policy").write_text(
        "whonix.ConvertInDisposable * anon-whonix @adminvm deny\n")
    out = explain(admin, "anon-whonix", "whonix.ConvertInDisposable+300+offline")
    assert out.code == 0
    assert out.out.splitlines()[0] == "whonix.ConvertInDisposable+300+offline -> dom0: DENY"
