"""Releases: dist/template.yaml (scripts/release_template.py) deploys the release's zips and is
otherwise template.yaml; the SAR metadata, LICENSE, samconfig.toml and scripts/release agree with
Cargo.toml and the template.

Run by scripts/test: python -m unittest discover -s tests/deploy
"""

import copy
import importlib.util
import pathlib
import re
import tomllib
import unittest

from test_parity import ROOT, sam_binaries, sam_function_names, template

spec = importlib.util.spec_from_file_location("release_template", ROOT / "scripts" / "release_template.py")
release_template = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release_template)

CARGO = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]


def _without_build_metadata(t):
    t = copy.deepcopy(t)
    for resource in t["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource.pop("Metadata")
    return t


class Release(unittest.TestCase):
    def test_the_prebuilt_template_is_the_template_with_each_function_on_its_zip(self):
        text = (ROOT / "template.yaml").read_text()
        original, prebuilt = template(text), template(release_template.prebuilt(text))
        binaries = sam_binaries(original)
        # six functions, five binaries: the roll-up of pending usage deploys budget-check's zip
        self.assertEqual(sorted(binaries.values()),
                         ["alert-fanout", "budget-check", "budget-check", "budget-webhook", "daily-aggregate", "key-guard"])
        self.assertEqual(sam_function_names(original)["UsageRollupFunction"], "usage-rollup")
        self.assertEqual(binaries["UsageRollupFunction"], "budget-check")
        for logical, binary in binaries.items():
            self.assertNotIn("Metadata", prebuilt["Resources"][logical], logical)
            self.assertEqual(prebuilt["Resources"][logical]["Properties"].pop("CodeUri"), f"{binary}.zip", logical)
        self.assertEqual(prebuilt, _without_build_metadata(original))
        self.assertNotIn("rust-cargolambda", release_template.prebuilt(text))
        # the comments (checkov's skips and their reasons) are kept
        self.assertEqual(text.count("# checkov:skip="), release_template.prebuilt(text).count("# checkov:skip="))

    def test_zips_in_s3(self):
        text = (ROOT / "template.yaml").read_text()
        prebuilt = template(release_template.prebuilt(text, lambda b: f"s3://bucket/spendguard/0.1.0/{b}.zip"))
        self.assertEqual(prebuilt["Resources"]["KeyGuardFunction"]["Properties"]["CodeUri"], "s3://bucket/spendguard/0.1.0/key-guard.zip")
        self.assertEqual(prebuilt["Resources"]["UsageRollupFunction"]["Properties"]["CodeUri"], "s3://bucket/spendguard/0.1.0/budget-check.zip")

    def test_a_template_of_another_form_is_refused_not_half_transformed(self):
        text = (ROOT / "template.yaml").read_text()
        changed = text.replace("      BuildProperties: { Binary: key-guard }\n", "      BuildProperties:\n        Binary: key-guard\n", 1)
        self.assertNotEqual(changed, text)
        with self.assertRaises(ValueError):
            release_template.prebuilt(changed)

    def test_scripts_release_builds_every_binary_of_the_template(self):
        script = (ROOT / "scripts" / "release").read_text()
        (listed,) = re.findall(r"^functions=\(([^)]*)\)$", script, re.M)
        # one zip per binary: usage-rollup deploys budget-check's
        self.assertEqual(sorted(listed.split()), sorted(set(sam_binaries(template()).values())))
        self.assertEqual(len(listed.split()), 5)
        # the way sam build builds them (scripts/check-deploy), so that the zips are the same
        self.assertIn('cargo lambda build --release --arm64 --locked --bin "$f"', script)
        # sam package of dist/template.yaml uploads the files its SAR metadata names from dist/
        app = template()["Metadata"]["AWS::ServerlessRepo::Application"]
        self.assertIn(f'cp {app["LicenseUrl"]} {app["ReadmeUrl"]} "$dist/"', script)

    def test_serverless_repo_metadata_matches_cargo(self):
        app = template()["Metadata"]["AWS::ServerlessRepo::Application"]
        self.assertEqual(app["SemanticVersion"], CARGO["version"])
        self.assertEqual(app["SpdxLicenseId"], CARGO["license"])
        self.assertEqual((app["SourceCodeUrl"], app["HomePageUrl"]), (CARGO["repository"], CARGO["repository"]))
        for key in ["LicenseUrl", "ReadmeUrl"]:
            self.assertTrue((ROOT / app[key]).is_file(), app[key])
        self.assertIn("Apache License\n                           Version 2.0, January 2004", (ROOT / app["LicenseUrl"]).read_text())
        # SAR's limits: description up to 256 characters, at most 10 labels of [a-zA-Z0-9+-_:/@]
        self.assertLessEqual(len(app["Description"]), 256)
        self.assertLessEqual(len(app["Labels"]), 10)
        for label in app["Labels"]:
            self.assertRegex(label, r"^[a-zA-Z0-9+\-_:/@]{1,127}$")
        self.assertRegex(app["Author"], r"^[a-z0-9](([a-z0-9]|-(?!-))*[a-z0-9])?$")
        # one license: deny.toml's comment once said MIT
        self.assertNotIn("spendguard is MIT", (ROOT / "deny.toml").read_text())

    def test_samconfig_enables_the_rust_build_and_holds_nothing_of_an_account(self):
        text = (ROOT / "samconfig.toml").read_text()
        config = tomllib.loads(text)["default"]
        self.assertIs(config["build"]["parameters"]["beta_features"], True)
        self.assertIn("CAPABILITY_IAM", config["deploy"]["parameters"]["capabilities"])
        self.assertNotRegex(text, r"\d{12}|arn:|AKIA")
        for command in config.values():
            for key in ["region", "profile", "parameter_overrides", "s3_bucket"]:
                self.assertNotIn(key, command["parameters"])


if __name__ == "__main__":
    unittest.main()
